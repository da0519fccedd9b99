"""Policies from hostile input: every refusal is one PolicyError line naming where, in bounded time.

The parse and check stage only (no BPF): tests/e2e/test_policy_fuzz.py sends the same generator's
policies through a real agent.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.policy_mutations import FIELD_PATH, policies
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import MAX_POLICY_BYTES, MAX_YAML_NODES, parse_policy
from tetragon.policy.validate import check_paths_reachable

HEAD = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: x\nspec:\n"
KPROBE = HEAD + "  kprobes:\n  - call: sys_getcwd\n"


def refusal(text: str) -> str:
    started = time.monotonic()
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    return message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (KPROBE + "    args: " + "[" * 2000, "invalid YAML: nested deeper than 64 levels (line 8"),
        (
            KPROBE + "    args:\n    - index: " + "9" * 5000,
            "invalid YAML: bad !!int value: Exceeds the limit",
        ),
        (HEAD.replace("name: x", "name: !!timestamp 2001-13-45"), "invalid YAML: bad !!timestamp value:"),
        (HEAD.replace("name: x", "name: !!timestamp 99999-12-14"), "invalid YAML: bad !!timestamp value:"),
        (HEAD.replace("name: x", 'name: "\\ud800"'), "invalid YAML: text that is not valid unicode (line 4"),
        (KPROBE.replace("name: x", "name: " + "x" * 9_000_000), "policy: 9000"),
        (
            KPROBE + "    selectors:\n" + "    - matchPIDs: []\n" * 10_000,
            "spec.kprobes[0].selectors: at most 5",
        ),
        (
            HEAD + "  uprobes:\n  - path: /" + "a" * 5000 + "\n    symbols: [main]",
            "spec.uprobes[0].path: not a",
        ),
        (HEAD + '  uprobes:\n  - path: /usr/bin/true\n    symbols: ["a\\0b"]', "spec.uprobes[0].symbols[0]"),
        (
            HEAD + "  tracepoints:\n  - subsystem: ../../..\n    event: x",
            "spec.tracepoints[0].subsystem: not a",
        ),
        (KPROBE.replace("sys_getcwd", "x" * 600), "spec.kprobes[0].call: not a kernel function name"),
    ],
)
def test_hostile_input_is_one_line_naming_where(text: str, expected: str) -> None:
    assert refusal(text).startswith(expected)


def test_aliases_expanding_exponentially_stop_at_the_node_limit() -> None:
    laughs = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10))
    message = refusal("l0: &l0 [lol]\n" + laughs)
    assert message.startswith(f"invalid YAML: more than {MAX_YAML_NODES} values (aliases expanded) (line 6")


def test_size_limit_is_clear() -> None:
    assert (
        refusal("#" * (MAX_POLICY_BYTES + 1))
        == f"policy: {MAX_POLICY_BYTES + 1} bytes, more than the {MAX_POLICY_BYTES} allowed"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a root-only directory and a file in it")
def test_uprobe_path_under_a_private_directory_gives_one_message_found_or_not(tmp_path: object) -> None:
    private = "/root/.tetragon-hostile-test"
    os.makedirs(private, mode=0o700, exist_ok=True)
    open(f"{private}/exists", "w").close()
    messages = []
    for path in (f"{private}/exists", f"{private}/missing", f"{private}/no/such/dir"):
        policy = parse_policy(HEAD + f"  uprobes:\n  - path: {path}\n    symbols: [main]")
        with pytest.raises(PolicyError) as info:
            check_paths_reachable(policy, 65534, set())
        messages.append(str(info.value).replace(path, "PATH"))
    assert len(set(messages)) == 1, messages
    assert messages[0].startswith("spec.uprobes[0].path: PATH is not a file uid 65534 can reach")
    usdt = HEAD + f"  usdts:\n  - {{path: {private}/exists, provider: p, name: n}}"
    with pytest.raises(PolicyError, match=r"^spec\.usdts\[0\]\.path: .* is not a file uid 65534 can reach"):
        check_paths_reachable(parse_policy(usdt), 65534, set())
    check_paths_reachable(
        parse_policy(HEAD + "  uprobes:\n  - path: /usr/bin/true\n    symbols: [main]"), 65534, set()
    )


def test_generated_policies_are_refused_cleanly() -> None:
    """100 generated policies: PolicyError only, one line naming where, none slower than 5 s."""
    refused = 0
    for n, text in policies(seed=13, count=100):
        started = time.monotonic()
        try:
            parse_policy(text)
        except PolicyError as exc:
            refused += 1
            message = str(exc)
            assert "\n" not in message and len(message) < 600, (n, message)
            assert FIELD_PATH.search(message), (n, message)
        assert time.monotonic() - started < 5, n
    assert refused > 60
