"""`tetra processtree` against a real agent and real processes: a shell forks two sleepers, one of
them a copy of sleep that a policy watches (`clock_nanosleep` from that binary only). The terminal
tree is checked line for line; the HTML page is rendered by headless Chromium (Debian's `chromium`,
installed by `make test`) and its DOM checked for the chain and the highlight."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from tests.e2e.agentproc import AgentProcess, body, is_exec_of, kind, running_agent

POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: processtree-sleeper
spec:
  kprobes:
  - call: sys_clock_nanosleep
    syscall: true
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{sleeper}"]
"""


@dataclass
class Chain:
    shell: subprocess.Popen[bytes]
    sleeper: str  # the watched copy of sleep
    exec_ids: dict[int, str]  # pid -> exec_id, from the agent's exec events
    pids: tuple[int, int, int]  # shell, /bin/sleep, sleeper

    def children_in_start_order(self) -> list[int]:
        """The shell's two children as the tree orders siblings, by start time: the exec_id's ktime
        (the shell starts both in the background, so either may exec first)."""
        _, sleep, sleeper = self.pids
        ktime = {p: int(base64.b64decode(self.exec_ids[p]).decode().split(":")[-2]) for p in (sleep, sleeper)}
        return sorted((sleep, sleeper), key=lambda p: (ktime[p], p))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("processtree")
    shutil.copy("/usr/bin/sleep", work / "tree-sleeper")
    (work / "policy.yaml").write_text(POLICY.format(sleeper=work / "tree-sleeper"))
    return work


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, workdir: Path) -> Iterator[AgentProcess]:
    yield from running_agent(
        tmp_path_factory, "agent-processtree", "--tracing-policy", str(workdir / "policy.yaml")
    )


@pytest.fixture(scope="module")
def chain(agent: AgentProcess, workdir: Path) -> Iterator[Chain]:
    sleeper = str(workdir / "tree-sleeper")
    shell = subprocess.Popen(["/bin/sh", "-c", f"/bin/sleep 60 & {sleeper} 60 & wait"])
    children: dict[str, int] = {}
    try:
        exec_ids = {shell.pid: body(agent.wait_for(is_exec_of(shell.pid)))["process"]["exec_id"]}
        for binary in ("/bin/sleep", sleeper):
            ev = agent.wait_for(
                lambda e, b=binary: (
                    kind(e) == "process_exec"  # type: ignore[misc]
                    and body(e)["process"]["binary"] == b
                    and body(e)["parent"]["pid"] == shell.pid
                )
            )
            children[binary] = body(ev)["process"]["pid"]
            exec_ids[children[binary]] = body(ev)["process"]["exec_id"]
        # the policy event of the watched sleeper, as exported
        agent.wait_for(
            lambda e: kind(e) == "process_kprobe" and body(e)["process"]["pid"] == children[sleeper]
        )
        yield Chain(shell, sleeper, exec_ids, (shell.pid, children["/bin/sleep"], children[sleeper]))
    finally:
        for pid in children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shell.send_signal(signal.SIGTERM)
        shell.wait(10)


def _lines(agent: AgentProcess, *args: str) -> list[str]:
    return agent.tetra("processtree", "--full", "--color", "always", *args).stdout.splitlines()


def test_terminal_tree_of_the_chain(agent: AgentProcess, chain: Chain) -> None:
    sh, sleep, sleeper = chain.pids
    ids = chain.exec_ids
    shell_line = f'/bin/sh -c "/bin/sleep 60 & {chain.sleeper} 60 & wait" pid={sh} exec_id={ids[sh]}'
    sleep_line = f"/bin/sleep 60 pid={sleep} exec_id={ids[sleep]}"
    sleeper_line = f"{chain.sleeper} 60 pid={sleeper} exec_id={ids[sleeper]} [policy event]"
    red = "\x1b[31m{}\x1b[0m"
    shown = {sleep: sleep_line, sleeper: red.format(sleeper_line)}
    first, second = chain.children_in_start_order()
    assert _lines(agent, "--pid", str(sh)) == [shell_line, f"├── {shown[first]}", f"└── {shown[second]}"]
    # only the branch that leads to the policy event: init ... pytest, the shell, the sleeper, each
    # the last (only) child of the line above
    branch = _lines(agent, "--policy-events")
    assert all(line.startswith("    " * (i - 1) + "└── ") for i, line in enumerate(branch) if i)
    assert [line.lstrip(" └─") for line in branch[-2:]] == [shell_line, red.format(sleeper_line)]
    # the whole tree holds the chain under this test's own process (the shell's parent)
    whole = _lines(agent, "--color", "never")
    at = next(i for i, line in enumerate(whole) if line.endswith(f"pid={sh} exec_id={ids[sh]}"))
    lead = whole[at][: whole[at].index("/bin/sh")]
    indent = lead[:-4] + ("│   " if lead.endswith("├── ") else "    ")
    plain = {sleep: sleep_line, sleeper: sleeper_line}
    assert whole[at + 1 : at + 3] == [f"{indent}├── {plain[first]}", f"{indent}└── {plain[second]}"]


def test_the_dump_marks_the_process_with_policy_events(agent: AgentProcess, chain: Chain) -> None:
    """What the tree reads: `refcnt_ops` of Tetragon's ProcessInternal, as `tetra debug dump` prints it."""
    sh, sleep, sleeper = chain.pids
    dump = [orjson.loads(line) for line in agent.tetra("debug", "dump", "processcache").stdout.splitlines()]
    by_exec = {p["process"]["exec_id"]: p for p in dump}
    # beside Tetragon's reference operations (process++, parent++, ...), our own key marks the sleeper
    assert by_exec[chain.exec_ids[sleeper]]["refcnt_ops"]["policy_event"] == 1
    assert by_exec[chain.exec_ids[sleeper]]["refcnt_ops"]["process++"] == 1
    assert "policy_event" not in by_exec[chain.exec_ids[sleep]].get("refcnt_ops", {})
    assert "policy_event" not in by_exec[chain.exec_ids[sh]].get("refcnt_ops", {})
    assert [p["process"]["pid"] for p in dump if "policy_event" in p.get("refcnt_ops", {})] == [sleeper]


# --- the HTML page in a real browser ------------------------------------------------------------

VOID = {"meta", "input", "br", "img", "link", "hr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    text: str = ""

    def find_all(self, pred: object) -> Iterator[Element]:
        if callable(pred) and pred(self):
            yield self
        for child in self.children:
            yield from child.find_all(pred)

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _DomBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in VOID:
            self.stack.append(el)

    def handle_endtag(self, tag: str) -> None:
        while len(self.stack) > 1:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        self.stack[-1].text += data


def _rendered_dom(page: Path, fragment: str = "") -> Element:
    """The DOM after the page's script ran, as headless Chromium serializes it."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs it: TEST_APT_PKGS)")
    res = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # root
            "--disable-gpu",
            f"--user-data-dir={page.parent / 'chromium-profile'}",
            "--dump-dom",
            page.as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and "</html>" in res.stdout, res.stderr[-2000:]
    builder = _DomBuilder()
    builder.feed(res.stdout)
    return builder.root


def _process_items(dom: Element) -> dict[int, Element]:
    """pid -> its item (a pid can appear twice, e.g. an exited image whose children live beside
    the pid's new image: the later one wins; the chain's pids appear once)."""
    return {int(li.attrs["data-pid"]): li for li in dom.find_all(lambda e: "proc" in e.classes)}


def _count_items(dom: Element) -> int:
    return sum(1 for _ in dom.find_all(lambda e: "proc" in e.classes))


def _child_items(li: Element) -> list[Element]:
    [details] = [c for c in li.children if c.tag == "details"]
    [ul] = [c for c in details.children if c.tag == "ul"]
    return [c for c in ul.children if c.tag == "li"]


def test_html_page_rendered_by_chromium(agent: AgentProcess, chain: Chain, workdir: Path) -> None:
    sh, sleep, sleeper = chain.pids
    page = workdir / "tree.html"
    agent.tetra("processtree", "--html", str(page))
    dom = _rendered_dom(page)
    items = _process_items(dom)
    assert [(int(li.attrs["data-pid"]), li.attrs["data-exec-id"]) for li in _child_items(items[sh])] == [
        (pid, chain.exec_ids[pid]) for pid in chain.children_in_start_order()
    ]
    assert sh in [int(li.attrs["data-pid"]) for li in _child_items(items[os.getpid()])]
    assert items[sleeper].classes == {"proc", "policy-event"}
    assert "policy-event" not in items[sleep].classes and "policy-event" not in items[sh].classes
    flagged = [pid for pid, li in items.items() if "policy-event" in li.classes]
    assert flagged == [sleeper]
    row = items[sleeper].children[0]
    assert row.tag == "div" and row.all_text().startswith(f"{chain.sleeper} 60pid {sleeper}")
    [summary] = dom.find_all(lambda e: e.attrs.get("id") == "summary")
    assert summary.all_text() == f"{_count_items(dom)} processes, 1 with policy events"

    # `#filter=` in the address: what does not match, and has no matching descendant, is hidden
    filtered = _process_items(_rendered_dom(page, "#filter=tree-sleeper"))
    visible = {pid for pid, li in filtered.items() if "hidden" not in li.classes}
    assert {sh, sleeper} <= visible and sleep not in visible
    assert len(visible) < len(filtered)
    only = _process_items(_rendered_dom(page, "#policy-events"))
    assert sleeper in {pid for pid, li in only.items() if "hidden" not in li.classes}
    assert sleep not in {pid for pid, li in only.items() if "hidden" not in li.classes}
