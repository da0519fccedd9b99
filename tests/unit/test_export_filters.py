from __future__ import annotations

import copy
from typing import Any

import pytest

from tetragon.export.filters import (
    FilterError,
    compile_allow_deny,
    compile_filters,
    event_allowed,
    match_all,
    parse_filter_lines,
)
from tetragon.export.labels import LabelSelectorError, parse_label_selector

HOST_EXEC: dict[str, Any] = {
    "process_exec": {
        "process": {
            "exec_id": "aG9zdDoxOjEwMA==",
            "pid": 100,
            "uid": 0,
            "cwd": "/root",
            "binary": "/usr/bin/curl",
            "arguments": "-s https://example.com",
            "flags": "execve clone",
            "parent_exec_id": "aG9zdDoxOjUw",
            "cap": {
                "permitted": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
                "effective": ["CAP_SYS_ADMIN"],
                "inheritable": [],
            },
        },
        "parent": {"exec_id": "aG9zdDoxOjUw", "pid": 50, "binary": "/bin/bash", "arguments": "-l"},
        "ancestors": [
            {"exec_id": "aG9zdDoxOjIw", "pid": 20, "binary": "/usr/sbin/sshd", "arguments": "-D"},
            {"exec_id": "aG9zdDoxOjE=", "pid": 1, "binary": "/sbin/init"},
        ],
    },
    "node_name": "node-a",
    "time": "2024-04-14T02:18:14.376304204Z",
}

POD_EXEC: dict[str, Any] = {
    "process_exec": {
        "process": {
            "exec_id": "bm9kZToyOjMwMA==",
            "pid": 300,
            "binary": "/usr/bin/netserver",
            "arguments": "-D",
            "docker": "19a02291e106ce6227b684197be232e",
            "in_init_tree": True,
            "pod": {
                "namespace": "default",
                "name": "tiefighter",
                "workload": "tiefighter",
                "container": {"id": "containerd://19a0", "name": "spaceship", "maybe_exec_probe": True},
                "pod_labels": {
                    "app.kubernetes.io/name": "tiefighter",
                    "class": "tiefighter",
                    "org": "empire",
                },
            },
        },
        "parent": {
            "pid": 290,
            "binary": "/usr/bin/containerd-shim-runc-v2",
            "arguments": "-namespace k8s.io",
        },
    },
    "node_name": "node-a",
    "time": "2024-04-14T02:18:15Z",
}

KPROBE: dict[str, Any] = {
    "process_kprobe": {
        "process": {"pid": 400, "binary": "/usr/bin/cat", "arguments": "/etc/passwd"},
        "parent": {"pid": 100, "binary": "/usr/bin/curl"},
        "function_name": "security_file_permission",
        "policy_name": "file-monitoring",
        "action": "KPROBE_ACTION_POST",
    },
    "node_name": "node-a",
}

RATE_LIMIT_INFO: dict[str, Any] = {
    "rate_limit_info": {"number_of_dropped_process_events": "3"},
    "node_name": "node-a",
}

HOST_EXIT: dict[str, Any] = {
    "process_exit": {"process": {"pid": 100, "binary": "/usr/bin/curl"}, "signal": "SIGKILL"},
    "node_name": "node-a",
}

CASES = [
    # binary_regex: RE2 search, not anchored
    ({"binary_regex": ["curl"]}, HOST_EXEC, True),
    ({"binary_regex": ["^curl"]}, HOST_EXEC, False),
    ({"binary_regex": ["^/usr/bin/(cat|curl)$"]}, HOST_EXEC, True),
    ({"binary_regex": ["nomatch", "bin/cu"]}, HOST_EXEC, True),
    ({"binary_regex": ["curl"]}, RATE_LIMIT_INFO, False),
    ({"binary_regex": []}, HOST_EXEC, False),
    ({"binary_regex": ["[[:alpha:]]+\\z"]}, HOST_EXEC, True),
    # namespace: exact; "" = host
    ({"namespace": [""]}, HOST_EXEC, True),
    ({"namespace": [""]}, POD_EXEC, False),
    ({"namespace": ["default"]}, POD_EXEC, True),
    ({"namespace": ["default"]}, HOST_EXEC, False),
    ({"namespace": ["kube-system", "default"]}, POD_EXEC, True),
    ({"namespace": ["defaul"]}, POD_EXEC, False),
    ({"namespace": [""]}, RATE_LIMIT_INFO, False),
    # namespace_regex
    ({"namespace_regex": ["^def"]}, POD_EXEC, True),
    ({"namespace_regex": [".*"]}, HOST_EXEC, False),
    # health_check: process or parent is a probe
    ({"health_check": True}, POD_EXEC, True),
    ({"health_check": True}, HOST_EXEC, False),
    ({"health_check": False}, HOST_EXEC, True),
    ({"health_check": False}, POD_EXEC, False),
    # pid
    ({"pid": [100]}, HOST_EXEC, True),
    ({"pid": [50]}, HOST_EXEC, False),
    ({"pid": [1, 300]}, POD_EXEC, True),
    # pid_set: process, parent or an ancestor in the event
    ({"pid_set": [100]}, HOST_EXEC, True),
    ({"pid_set": [50]}, HOST_EXEC, True),
    ({"pid_set": [1]}, HOST_EXEC, True),
    ({"pid_set": [100]}, KPROBE, True),
    ({"pid_set": [7]}, HOST_EXEC, False),
    ({"pid_set": [1]}, POD_EXEC, False),
    # event_set
    ({"event_set": ["PROCESS_EXEC"]}, HOST_EXEC, True),
    ({"event_set": ["PROCESS_EXEC"]}, HOST_EXIT, False),
    ({"event_set": ["PROCESS_EXIT", "PROCESS_KPROBE"]}, KPROBE, True),
    ({"event_set": ["RATE_LIMIT_INFO"]}, RATE_LIMIT_INFO, True),
    ({"event_set": [1]}, HOST_EXEC, True),
    ({"event_set": []}, HOST_EXEC, False),
    # pod_regex
    ({"pod_regex": ["^tie"]}, POD_EXEC, True),
    ({"pod_regex": ["^x"]}, POD_EXEC, False),
    ({"pod_regex": [".*"]}, HOST_EXEC, False),
    # arguments_regex / parent_arguments_regex
    ({"arguments_regex": ["https://"]}, HOST_EXEC, True),
    ({"arguments_regex": ["^-D$"]}, HOST_EXEC, False),
    ({"parent_arguments_regex": ["-l"]}, HOST_EXEC, True),
    ({"parent_arguments_regex": ["-D"]}, HOST_EXEC, False),
    # labels
    ({"labels": ["org=empire"]}, POD_EXEC, True),
    ({"labels": ["org=rebels"]}, POD_EXEC, False),
    ({"labels": ["org=rebels", "class in (tiefighter, xwing)"]}, POD_EXEC, True),
    ({"labels": ["org=empire,class!=tiefighter"]}, POD_EXEC, False),
    ({"labels": ["app.kubernetes.io/name"]}, POD_EXEC, True),
    ({"labels": ["!org"]}, POD_EXEC, False),
    ({"labels": ["org notin (rebels)"]}, POD_EXEC, True),
    ({"labels": [""]}, POD_EXEC, True),
    ({"labels": [""]}, HOST_EXEC, False),
    ({"labels": ["!org"]}, HOST_EXEC, False),
    # policy_names
    ({"policy_names": ["file-monitoring"]}, KPROBE, True),
    ({"policy_names": ["other"]}, KPROBE, False),
    ({"policy_names": ["file-monitoring"]}, HOST_EXEC, False),
    # capabilities
    ({"capabilities": {"effective": {"any": ["CAP_SYS_ADMIN", "CAP_BPF"]}}}, HOST_EXEC, True),
    ({"capabilities": {"effective": {"any": ["CAP_BPF"]}}}, HOST_EXEC, False),
    ({"capabilities": {"permitted": {"all": ["CAP_CHOWN", "CAP_SYS_ADMIN"]}}}, HOST_EXEC, True),
    ({"capabilities": {"permitted": {"all": ["CAP_CHOWN", "CAP_KILL"]}}}, HOST_EXEC, False),
    ({"capabilities": {"permitted": {"exactly": ["CAP_SYS_ADMIN", "CAP_CHOWN"]}}}, HOST_EXEC, True),
    ({"capabilities": {"permitted": {"exactly": ["CAP_SYS_ADMIN"]}}}, HOST_EXEC, False),
    ({"capabilities": {"inheritable": {"none": ["CAP_SYS_ADMIN"]}}}, HOST_EXEC, True),
    ({"capabilities": {"effective": {"none": ["CAP_SYS_ADMIN"]}}}, HOST_EXEC, False),
    (
        {"capabilities": {"effective": {"any": ["CAP_SYS_ADMIN"]}, "permitted": {"none": ["CAP_CHOWN"]}}},
        HOST_EXEC,
        False,
    ),
    ({"capabilities": {"effective": {"any": [21]}}}, HOST_EXEC, True),
    ({"capabilities": {"effective": {"none": ["CAP_BPF"]}}}, POD_EXEC, False),  # no cap info
    # parent_binary_regex / ancestor_binary_regex
    ({"parent_binary_regex": ["bash$"]}, HOST_EXEC, True),
    ({"parent_binary_regex": ["curl"]}, HOST_EXEC, False),
    ({"parent_binary_regex": ["curl"]}, KPROBE, True),
    ({"ancestor_binary_regex": ["sshd"]}, HOST_EXEC, True),
    ({"ancestor_binary_regex": ["bash"]}, HOST_EXEC, False),  # the parent is not an ancestor
    ({"ancestor_binary_regex": [".*"]}, POD_EXEC, False),
    # container_id: regex on process.docker
    ({"container_id": ["^19a0"]}, POD_EXEC, True),
    ({"container_id": ["^ffff"]}, POD_EXEC, False),
    ({"container_id": ["^$"]}, HOST_EXEC, True),
    # in_init_tree
    ({"in_init_tree": True}, POD_EXEC, True),
    ({"in_init_tree": True}, HOST_EXEC, False),
    ({"in_init_tree": False}, HOST_EXEC, True),
    # container_name_regex
    ({"container_name_regex": ["^space"]}, POD_EXEC, True),
    ({"container_name_regex": ["^x"]}, POD_EXEC, False),
    ({"container_name_regex": [".*"]}, HOST_EXEC, False),
    # AND within a filter
    ({"event_set": ["PROCESS_EXEC"], "namespace": ["default"]}, POD_EXEC, True),
    ({"event_set": ["PROCESS_EXIT"], "namespace": ["default"]}, POD_EXEC, False),
    ({"binary_regex": ["curl"], "pid": [101]}, HOST_EXEC, False),
    ({}, HOST_EXEC, True),
]


@pytest.mark.parametrize(("flt", "event", "expected"), CASES)
def test_single_filter(flt: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    before = copy.deepcopy(event)
    assert compile_filters([flt])(event) is expected
    assert event == before


def test_filters_are_ored() -> None:
    pred = compile_filters([{"pid": [1]}, {"binary_regex": ["netserver"]}])
    assert pred(POD_EXEC)
    assert not pred(HOST_EXEC)


def test_empty_list_matches_everything() -> None:
    assert compile_filters([]) is match_all
    assert match_all(RATE_LIMIT_INFO)


def test_camel_case_and_upper_case_keys_are_accepted() -> None:
    assert compile_filters([{"binaryRegex": ["curl"]}])(HOST_EXEC)
    assert compile_filters([{"PID": [100]}])(HOST_EXEC)
    assert compile_filters([{"healthCheck": {"value": True}}])(POD_EXEC)


def test_event_allowed_semantics() -> None:
    allow = compile_filters([{"event_set": ["PROCESS_EXEC", "PROCESS_KPROBE"]}])
    deny = compile_filters([{"health_check": True}, {"namespace": ["", "kube-system"]}])
    assert event_allowed(allow, deny, POD_EXEC) is False  # health check
    assert event_allowed(allow, deny, HOST_EXEC) is False  # host namespace
    assert event_allowed(allow, None, HOST_EXEC) is True
    assert event_allowed(None, None, HOST_EXIT) is True
    assert event_allowed(allow, None, HOST_EXIT) is False
    assert event_allowed(None, deny, RATE_LIMIT_INFO) is True
    # The predicate of an empty list means "no filters", on the deny side too.
    assert event_allowed(compile_filters([]), compile_filters([]), HOST_EXEC) is True


def test_compile_allow_deny() -> None:
    assert compile_allow_deny([], []) is None
    only_deny = compile_allow_deny([], [{"pid": [100]}])
    assert only_deny is not None
    assert not only_deny(HOST_EXEC)
    assert only_deny(POD_EXEC)
    both = compile_allow_deny([{"event_set": ["PROCESS_EXEC"]}], [{"namespace": [""]}])
    assert both is not None
    assert both(POD_EXEC)
    assert not both(HOST_EXEC)
    assert not both(KPROBE)


def test_parse_filter_lines_forms() -> None:
    text = (
        '{"event_set":["PROCESS_EXEC","PROCESS_EXIT"],"namespace":["foo"]}\n\n'
        '{"health_check":true}{"pid":[1]} '
    )
    assert parse_filter_lines(text) == [
        {"event_set": ["PROCESS_EXEC", "PROCESS_EXIT"], "namespace": ["foo"]},
        {"health_check": True},
        {"pid": [1]},
    ]
    assert parse_filter_lines("") == []
    assert parse_filter_lines("  \n ") == []
    assert parse_filter_lines('{"event_set":[9, "PROCESS_LSM"], "binary_regex": null}') == [
        {"event_set": ["PROCESS_KPROBE", "PROCESS_LSM"]}
    ]
    assert parse_filter_lines('{"capabilities":{"effective":{"any":["CAP_DAC_OVERRIDE", 0]}}}') == [
        {"capabilities": {"effective": {"any": ["DAC_OVERRIDE", "CAP_CHOWN"]}}}
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"binary_regex":["a"]}\n{"bogus":1}', "line 2: unknown field 'bogus'"),
        ('{"binary_regex":"curl"}', "'binary_regex': expected a list of strings"),
        ('{"binary_regex":["("]}', "'binary_regex': invalid regular expression '('"),
        ('{"container_id":["[z-a]"]}', "'container_id': invalid regular expression"),
        ('{"event_set":["PROCESS_FOO"]}', 'unknown event type "PROCESS_FOO"'),
        ('{"event_set":[3]}', "unknown event type 3"),
        ('{"pid":["12"]}', "'pid': expected a list of pids"),
        ('{"pid":[-1]}', "'pid': expected a list of pids"),
        ('{"health_check":"yes"}', "'health_check': expected true or false"),
        ('{"in_init_tree":1}', "'in_init_tree': expected true or false"),
        ('{"cel_expression":["process_exec.process.pid =="]}', "invalid CEL expression"),
        ('{"cel_expression":["bogus.pid == 1"]}', "undeclared reference to 'bogus'"),
        ('{"cel_expression":["1 + 2"]}', "must evaluate to a bool, got int"),
        ('{"cel_expression":["process_exec.process.pid"]}', "must evaluate to a bool, got int"),
        ('{"cel_expression":["process_kprobe.args[0].file_arg.path"]}', "must evaluate to a bool, got str"),
        ('{"labels":["a in (b"]}', "'labels': invalid label selector"),
        ('{"labels":["Bad Key=1"]}', "'labels': invalid label selector"),
        ('{"capabilities":{"effective":{"any":["CAP_X"]}}}', 'unknown capability "CAP_X"'),
        ('{"capabilities":{"effective":{"any":["CAP_BPF"],"none":["CAP_KILL"]}}}', "exactly one match set"),
        ('{"capabilities":{"effective":{}}}', "exactly one match set"),
        ('{"capabilities":{"bounding":{"any":["CAP_BPF"]}}}', "unknown capability set 'bounding'"),
        ('{"pid":[1]}\n{"pid":[2', "line 2: invalid JSON"),
        ('["PROCESS_EXEC"]', "line 1: expected a JSON object"),
        ('{"pid":[1]}\n\n  42', "line 3: expected a JSON object"),
    ],
)
def test_parse_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter_lines(text)
    assert message in str(info.value)


def test_pid_set_can_require_the_flag() -> None:
    with pytest.raises(FilterError, match="--enable-pid-set-filter"):
        parse_filter_lines('{"pid_set":[1]}', enable_pid_set_filter=False)
    assert parse_filter_lines('{"pid_set":[1]}', enable_pid_set_filter=True) == [{"pid_set": [1]}]


def test_compile_filters_validates_too() -> None:
    with pytest.raises(FilterError, match="filter 2: unknown field 'nope'"):
        compile_filters([{"pid": [1]}, {"nope": []}])


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=1", {"a": "1"}, True),
        ("a==1", {"a": "1"}, True),
        ("a=1", {"a": "2"}, False),
        ("a!=1", {}, True),
        ("a!=1", {"a": "1"}, False),
        ("a in (1, 2)", {"a": "2"}, True),
        ("a in (1,2)", {}, False),
        ("a notin (1,2)", {}, True),
        ("a notin (1,2)", {"a": "1"}, False),
        ("a", {"a": ""}, True),
        ("!a", {"a": ""}, False),
        ("a,b=2", {"a": "x", "b": "2"}, True),
        ("a,b=2", {"b": "2"}, False),
        ("a=", {"a": ""}, True),
        ("example.com/tier in (front),x!=y", {"example.com/tier": "front"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(selector)(labels) is expected


@pytest.mark.parametrize(
    "selector", ["a in 1", "a in (1,", "a,", "a b", "=1", "a=(1)", "a in (1,,2)", "a=b c"]
)
def test_label_selector_errors(selector: str) -> None:
    with pytest.raises(LabelSelectorError):
        parse_label_selector(selector)


KPROBE = {
    "process_kprobe": {
        "process": {"binary": "/usr/bin/cat", "pid": 42},
        "function_name": "security_file_permission",
        "args": [{"file_arg": {"path": "/etc/passwd"}}, {"int_arg": 4}],
    }
}
EXEC = {"process_exec": {"process": {"binary": "/usr/bin/cat", "pid": 42, "arguments": "/etc/passwd"}}}


def test_cel_expression_over_the_event_named_by_its_key() -> None:
    by_function = compile_filters(
        [{"cel_expression": ["process_kprobe.function_name == 'security_file_permission'"]}]
    )
    assert by_function(KPROBE) and not by_function(EXEC)  # another event type: no match, no error
    by_arg = compile_filters(
        [{"cel_expression": ["process_kprobe.args[0].file_arg.path.startsWith('/etc/')"]}]
    )
    assert by_arg(KPROBE)
    either = compile_filters(
        [{"cel_expression": ["process_kprobe.args[1].int_arg == 2", "process_exec.process.pid == 42"]}]
    )
    assert either(EXEC) and not either(KPROBE)  # expressions are ORed
    anded = compile_filters(
        [{"binary_regex": ["bash"], "cel_expression": ["process_exec.process.pid == 42"]}]
    )
    assert not anded(EXEC)  # and ANDed with the other fields
    missing = compile_filters([{"cel_expression": ["process_exec.process.pod.name == 'x'"]}])
    assert not missing(EXEC)  # a field the event does not carry: no match
