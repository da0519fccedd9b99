from __future__ import annotations

import copy
from typing import Any

import pytest

from tetragon.export.fieldfilters import compile_field_filters, identity, parse_field_filter_lines
from tetragon.export.filterspec import FilterError

EXEC: dict[str, Any] = {
    "process_exec": {
        "process": {
            "exec_id": "ZXhlYzox",
            "pid": 10,
            "binary": "/usr/bin/ls",
            "arguments": "-l",
            "parent_exec_id": "cGFyZW50OjE=",
            "pod": {"namespace": "ns", "name": "web-1", "pod_labels": {"app": "web"}},
        },
        "parent": {"exec_id": "cGFyZW50OjE=", "pid": 9, "binary": "/bin/sh"},
        "ancestors": [{"exec_id": "YTox", "pid": 1, "binary": "/sbin/init"}],
    },
    "node_name": "n1",
    "time": "2024-01-01T00:00:00Z",
}
EXIT: dict[str, Any] = {
    "process_exit": {"process": {"exec_id": "ZXhlYzox", "pid": 10, "binary": "/usr/bin/ls"}, "status": 1},
    "node_name": "n1",
    "time": "2024-01-01T00:00:01Z",
}


def test_no_filters_is_identity() -> None:
    f = compile_field_filters([])
    assert f is identity
    assert f(EXEC) is EXEC


def test_filter_not_applying_returns_same_object() -> None:
    f = compile_field_filters([{"event_set": ["PROCESS_KPROBE"], "fields": "process.pid"}])
    assert f(EXEC) is EXEC


def test_include_keeps_only_listed_paths_and_top_level() -> None:
    before = copy.deepcopy(EXEC)
    f = compile_field_filters([{"fields": "process.exec_id,process.parent_exec_id", "action": "INCLUDE"}])
    out = f(EXEC)
    assert out == {
        "process_exec": {"process": {"exec_id": "ZXhlYzox", "parent_exec_id": "cGFyZW50OjE="}},
        "node_name": "n1",
        "time": "2024-01-01T00:00:00Z",
    }
    assert list(out) == ["process_exec", "node_name", "time"]
    assert before == EXEC  # never mutated


def test_action_defaults_to_include() -> None:
    out = compile_field_filters([{"fields": "parent"}])(EXEC)
    assert out["process_exec"] == {"parent": EXEC["process_exec"]["parent"]}


def test_exclude_removes_paths() -> None:
    out = compile_field_filters([{"fields": "process.pod.pod_labels,parent", "action": "EXCLUDE"}])(EXEC)
    assert out["process_exec"]["process"]["pod"] == {"namespace": "ns", "name": "web-1"}
    assert "parent" not in out["process_exec"]
    assert out["process_exec"]["ancestors"] == EXEC["process_exec"]["ancestors"]


def test_lists_of_messages_are_filtered_per_element() -> None:
    out = compile_field_filters([{"fields": "ancestors.binary"}])(EXEC)
    assert out["process_exec"] == {"ancestors": [{"binary": "/sbin/init"}]}


def test_exclude_wins_over_include() -> None:
    filters = [
        {"fields": "process.binary,process.pid", "action": "INCLUDE"},
        {"fields": "process.pid", "action": "EXCLUDE"},
    ]
    assert compile_field_filters(filters)(EXEC)["process_exec"] == {"process": {"binary": "/usr/bin/ls"}}
    # Order does not matter for an exclusion: what it removes stays removed.
    assert compile_field_filters(filters[::-1])(EXEC)["process_exec"] == {
        "process": {"binary": "/usr/bin/ls"}
    }


def test_include_per_event_type() -> None:
    f = compile_field_filters([{"event_set": ["PROCESS_EXEC"], "fields": "process.pid"}])
    assert f(EXEC)["process_exec"] == {"process": {"pid": 10}}
    assert f(EXIT) is EXIT  # other types keep everything


def test_invert_event_set() -> None:
    f = compile_field_filters(
        [{"event_set": ["PROCESS_EXEC"], "fields": "process.exec_id", "invert_event_set": True}]
    )
    assert f(EXEC) is EXEC
    assert f(EXIT)["process_exit"] == {"process": {"exec_id": "ZXhlYzox"}}


def test_two_includes_keep_the_intersection_as_tetragon_applies_them_in_turn() -> None:
    f = compile_field_filters([{"fields": "process.pid,process.binary"}, {"fields": "process.pid,parent"}])
    assert f(EXEC)["process_exec"] == {"process": {"pid": 10}}


def test_whole_subtree_wins_over_sub_path() -> None:
    f = compile_field_filters([{"fields": "process.binary,process"}])
    assert f(EXEC)["process_exec"]["process"] == EXEC["process_exec"]["process"]


def test_empty_fields_change_nothing() -> None:
    assert compile_field_filters([{"fields": "", "action": "INCLUDE"}]) is identity


def test_parse_field_filter_lines() -> None:
    text = (
        '{"fields":"process.exec_id,process.parentExecId","event_set":["PROCESS_EXEC"],'
        '"invert_event_set":true,"action":"INCLUDE"}\n'
        '{"fields":"parent","action":"EXCLUDE"}'
    )
    assert parse_field_filter_lines(text) == [
        {
            "event_set": ["PROCESS_EXEC"],
            "fields": ["process.exec_id", "process.parent_exec_id"],
            "action": "INCLUDE",
            "invert_event_set": True,
        },
        {"event_set": [], "fields": ["parent"], "action": "EXCLUDE", "invert_event_set": False},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"fields":"a","action":"DROP"}', 'unknown action "DROP"'),
        ('{"fields":"a","event_set":["NOPE"]}', 'unknown event type "NOPE"'),
        ('{"fields":"a..b"}', "invalid field path 'a..b'"),
        ('{"fields":1}', "expected a comma-separated string"),
        ('{"fields":"a","invert_event_set":"yes"}', "expected true or false"),
        ('{"fields":"a"}\n{"field":"b"}', "line 2: unknown field 'field'"),
    ],
)
def test_parse_field_filter_errors(text: str, message: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_field_filter_lines(text)
    assert message in str(info.value)
