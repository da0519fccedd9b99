from __future__ import annotations

import copy
from typing import Any

import pytest

from tetragon.export.filterspec import FilterError
from tetragon.export.redaction import RedactionFilters, compile_redaction, parse_redaction_filter_lines

PASSWORD = r"--password(?:\s+|=)(\S*)"


def event(binary: str, arguments: str) -> dict[str, Any]:
    return {
        "process_exec": {
            "process": {"pid": 5, "binary": binary, "arguments": arguments},
            "parent": {"pid": 4, "binary": "/bin/sh", "arguments": "-c 'mysql --password=parentsecret'"},
            "ancestors": [{"pid": 1, "binary": "/sbin/init", "arguments": "--password hunter2"}],
        },
        "node_name": "n",
    }


@pytest.mark.parametrize(
    ("patterns", "arguments", "expected"),
    [
        ([PASSWORD], "-u root --password=s3cret db", "-u root --password=***** db"),
        ([PASSWORD], "--password s3cret --password other", "--password ***** --password *****"),
        ([PASSWORD], "-u root", "-u root"),
        ([r"(a)(b)?c"], "ac abc", "*****c **********c"),
        ([r"((ab)c)"], "abc", "*****"),  # nested group already covered by its parent
        ([r"token=\S+"], "token=x", "token=x"),  # no capture group: nothing to redact
        ([r"(x)", r"(y)"], "xy", "**********"),
    ],
)
def test_redact_arguments(patterns: list[str], arguments: str, expected: str) -> None:
    assert RedactionFilters([{"redact": patterns}]).redact_arguments("/usr/bin/mysql", arguments) == expected


def test_binary_regex_restricts_the_filter() -> None:
    filters = RedactionFilters([{"redact": [PASSWORD], "binary_regex": ["mysql$"]}])
    assert filters.redact_arguments("/usr/bin/mysql", "--password=a") == "--password=*****"
    assert filters.redact_arguments("/usr/bin/psql", "--password=a") == "--password=a"


def test_environment_is_redacted_as_key_value() -> None:
    filters = RedactionFilters([{"redact": [r"^AWS_SECRET_ACCESS_KEY=(.*)"]}])
    assert filters.redact_environment("/bin/x", ["AWS_SECRET_ACCESS_KEY=abc", "HOME=/root"]) == [
        "AWS_SECRET_ACCESS_KEY=*****",
        "HOME=/root",
    ]


def test_apply_redacts_process_parent_ancestors_without_mutating() -> None:
    apply = compile_redaction(parse_redaction_filter_lines('{"redact":["--password(?:\\\\s+|=)(\\\\S*)"]}'))
    assert apply is not None
    ev = event("/usr/bin/mysql", "--password=s3cret")
    before = copy.deepcopy(ev)
    out = apply(ev)
    assert ev == before
    body = out["process_exec"]
    assert body["process"]["arguments"] == "--password=*****"
    assert body["parent"]["arguments"] == "-c 'mysql --password=*****"
    assert body["ancestors"][0]["arguments"] == "--password *****"
    assert out["node_name"] == "n"


def test_apply_returns_same_object_when_nothing_matches() -> None:
    apply = compile_redaction([{"redact": [r"--token=(\S+)"]}])
    assert apply is not None
    ev = event("/bin/true", "--verbose")
    assert apply(ev) is ev
    rate = {"rate_limit_info": {"number_of_dropped_process_events": "1"}}
    assert apply(rate) is rate


def test_apply_env_vars_in_events() -> None:
    apply = compile_redaction([{"redact": [r"^PASS=(.*)"]}])
    assert apply is not None
    ev = {
        "process_exec": {
            "process": {
                "binary": "/bin/x",
                "environment_variables": [{"Key": "PASS", "Value": "x"}, {"Key": "A", "Value": "b"}],
            }
        }
    }
    out = apply(ev)
    assert out["process_exec"]["process"]["environment_variables"] == [
        {"Key": "PASS", "Value": "*****"},
        {"Key": "A", "Value": "b"},
    ]
    assert ev["process_exec"]["process"]["environment_variables"][0]["Value"] == "x"


def test_no_filters() -> None:
    assert compile_redaction([]) is None
    assert not RedactionFilters([{"binary_regex": ["x"]}])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"redact":["("]}', "invalid regular expression '('"),
        ('{"redact":"x"}', "expected a list of regular expressions"),
        ('{"redact":["(x)"],"binaryRegex":["["]}', "'binary_regex': invalid regular expression"),
        ('{"redact":["(x)"]}\n{"redacts":["(x)"]}', "line 2: unknown field 'redacts'"),
        ('{"match":[{"binary_regex":["x"]}]}', "deprecated"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_redaction_filter_lines(text)
    assert message in str(info.value)
