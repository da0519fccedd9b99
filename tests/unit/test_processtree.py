"""`tetra processtree` without an agent: the tree from ProcessInternal messages, the terminal lines,
the HTML page's data, and the `policy_event` key of the GetDebug dump."""

from __future__ import annotations

import re

import orjson
import pytest

from tetragon.api.debug import POLICY_EVENT_OP, process_internal
from tetragon.api.gen.tetragon import sensors_pb2
from tetragon.cli.tetra import build_parser
from tetragon.cli.tetra_client import CliError
from tetragon.cli.tetra_processtree import ProcessNode, build_forest, select, text_lines
from tetragon.cli.tetra_processtree_html import render_html
from tetragon.process.cache import ProcessEntry


def _entry(pid: int, parent: int, start: str, *, policy: bool = False, refcnt: int = 1) -> ProcessEntry:
    head = {
        "exec_id": f"e{pid}",
        "pid": pid,
        "binary": f"/bin/p{pid}",
        "arguments": "-x" if pid % 2 else "",
        "start_time": start,
        "parent_exec_id": f"e{parent}",
    }
    entry = ProcessEntry(f"e{pid}", pid, pid, f"e{parent}", head, refcnt=refcnt, exited=refcnt == 0)
    entry.policy_event = policy
    return entry


def _nodes(*entries: ProcessEntry) -> list[ProcessNode]:
    return [ProcessNode.from_internal(process_internal(e)) for e in entries]


T = "2026-12-07T10:00:0{}Z"
CHAIN = (
    _entry(1, 0, T.format(0)),
    _entry(20, 1, T.format(3)),
    _entry(10, 1, T.format(2)),
    _entry(11, 10, T.format(4), policy=True),
    _entry(12, 10, T.format(5), refcnt=0),
)


def test_the_dump_flags_processes_with_policy_events_in_refcnt_ops() -> None:
    flagged, plain = process_internal(CHAIN[3]), process_internal(CHAIN[2])
    assert dict(flagged.refcnt_ops) == {"process++": 1, POLICY_EVENT_OP: 1}
    assert dict(plain.refcnt_ops) == {"process++": 1}
    # the wire format stays Tetragon's ProcessInternal: a map<string, int32> entry
    again = sensors_pb2.ProcessInternal.FromString(flagged.SerializeToString())
    assert again.refcnt_ops["policy_event"] == 1 and again.process.pid.value == 11


def test_terminal_tree_is_exact() -> None:
    roots = build_forest(_nodes(*CHAIN))
    assert list(text_lines(roots)) == [
        "/bin/p1 -x pid=1 exec_id=e1",
        "├── /bin/p10 pid=10 exec_id=e10",
        "│   ├── /bin/p11 -x pid=11 exec_id=e11 [policy event]",
        "│   └── /bin/p12 pid=12 exec_id=e12 [exited]",
        "└── /bin/p20 pid=20 exec_id=e20",
    ]
    colored = list(text_lines(roots, color=True))
    assert colored[2] == "│   ├── \x1b[31m/bin/p11 -x pid=11 exec_id=e11 [policy event]\x1b[0m"
    assert colored[1] == "├── /bin/p10 pid=10 exec_id=e10"


def test_subtree_of_a_pid_and_policy_branches() -> None:
    sub = select(build_forest(_nodes(*CHAIN)), 10, False)
    assert [line.split(" pid=")[0] for line in text_lines(sub)] == [
        "/bin/p10",
        "├── /bin/p11 -x",
        "└── /bin/p12",
    ]
    only = select(build_forest(_nodes(*CHAIN)), 0, True)
    assert [line.split(" pid=")[0] for line in text_lines(only)] == [
        "/bin/p1 -x",
        "└── /bin/p10",
        "    └── /bin/p11 -x",
    ]
    with pytest.raises(CliError, match="no process with pid 99"):
        select(build_forest(_nodes(*CHAIN)), 99, False)


def test_long_arguments_are_cut_on_the_terminal_only() -> None:
    entry = _entry(1, 0, T.format(0))
    entry.head["arguments"] = "a" * 200
    [node] = build_forest(_nodes(entry))
    [line] = text_lines([node])
    assert line == "/bin/p1 " + "a" * 79 + "… pid=1 exec_id=e1"
    assert '"' + "a" * 200 + '"' in render_html([node], "x")


def test_control_characters_in_arguments_stay_on_one_line_and_cannot_drive_the_terminal() -> None:
    """A `bash -c` script spans lines (CI's runner is one); an argv can carry terminal escapes."""
    entry = _entry(1, 0, T.format(0), policy=True)
    entry.head["arguments"] = "-c 'set -e\nmake test'\t\x1b]0;owned\x07\x9b2J\x7f"
    child = _entry(2, 1, T.format(1))
    lines = list(text_lines(build_forest(_nodes(entry, child)), color=True))
    assert lines == [
        "\x1b[31m/bin/p1 -c 'set -e\\nmake test'\\t\\x1b]0;owned\\x07\\x9b2J\\x7f pid=1 exec_id=e1"
        " [policy event]\x1b[0m",
        "└── /bin/p2 pid=2 exec_id=e2",
    ]


def test_html_page_is_self_contained_and_its_data_cannot_close_the_script() -> None:
    hostile = _entry(1, 0, T.format(0), policy=True)
    hostile.head["arguments"] = "</script><script>alert(1)</script>"
    page = render_html(build_forest(_nodes(hostile, CHAIN[1])), "unix:///run/<x>")
    assert "</script><script>alert" not in page and "unix:///run/&lt;x&gt;" in page
    assert not re.search(r"\b(?:src|href)=|https?://|@import|url\(", page)  # nothing fetched
    data = re.search(r'<script type="application/json" id="tree-data">(.*?)</script>', page, re.S)
    assert data is not None
    root, child = orjson.loads(data.group(1))
    assert root["arguments"] == "</script><script>alert(1)</script>" and root["policy_event"] is True
    assert (root["parent"], child["pid"], child["parent"]) == (-1, 20, 0)


def test_a_chain_deeper_than_the_stack_limits() -> None:
    depth = 1500  # deeper than Python's recursion limit and orjson's nesting limit
    chain = [_entry(i + 1, i, f"2026-12-07T10:00:00.{i:06d}Z", policy=i == depth - 1) for i in range(depth)]
    roots = build_forest(_nodes(*chain))
    lines = list(text_lines(roots))
    assert len(lines) == depth and lines[-1].startswith(" " * 4 * (depth - 2) + "└── /bin/p1500")
    assert len(list(text_lines(select(roots, 0, True)))) == depth
    page = render_html(roots, "x")
    rows = orjson.loads(page.split('id="tree-data">', 1)[1].split("</script>", 1)[0])
    assert [r["parent"] for r in rows] == list(range(-1, depth - 1))


def test_cli_options() -> None:
    args = build_parser().parse_args(["processtree", "--pid", "7", "--html", "t.html", "--policy-events"])
    assert (args.command, args.pid, args.html, args.policy_events, args.all) == (
        "processtree",
        7,
        "t.html",
        True,
        False,
    )
    assert build_parser().parse_args(["processtree", "-o", "html"]).output == "html"
