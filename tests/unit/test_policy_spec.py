"""TracingPolicy parsing: Tetragon's own examples, CRD defaults, normalisation, limits and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import conformance_params, tetragon_examples, tetragon_policy_files
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import parse_policies, parse_policy
from tetragon.policy.names import ACTIONS, OPERATORS
from tetragon.policy.schema import (
    KProbeSpec,
    TracingPolicy,
    find_list,
    option,
    policy_mode,
    rate_limit_seconds,
    resolve_list,
)
from tetragon.policy.syscall_table import X64

EXAMPLE_FILES = tetragon_policy_files()  # the conformance tier: [] when $TETRAGON_EXAMPLES is unset


def example(*parts: str) -> Path:
    return tetragon_examples("policies", *parts)


HEAD = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n"


def kprobe(body: str, extra: str = "") -> str:
    """A policy with one kprobe on `x` whose YAML body (indented 4) follows `call`."""
    return HEAD + "  kprobes:\n  - call: x\n" + body + extra


def selector(body: str, args: str = "    args:\n    - index: 0\n      type: int\n") -> str:
    """A kprobe with one int arg and one selector whose body (indented 6) is given."""
    return kprobe(args + "    selectors:\n    - " + body.lstrip())


# --- Tetragon's examples -------------------------------------------------------------------------------
@pytest.mark.conformance
def test_examples_found() -> None:
    assert len(EXAMPLE_FILES) >= 70
    assert any(p.parent.name == "quickstart" for p in EXAMPLE_FILES)
    assert any(p.parent.name == "other" for p in EXAMPLE_FILES)


@pytest.mark.conformance
@pytest.mark.parametrize(
    "path", conformance_params(EXAMPLE_FILES), ids=lambda p: str(p.relative_to(example()))
)
def test_example_parses(path: Path) -> None:
    # Namespaced examples carry no metadata.namespace: they rely on `kubectl apply -n`.
    policies = parse_policies(path.read_text(), namespace="default")
    assert len(policies) == 1
    p = policies[0]
    assert p.metadata.name
    assert p.kind in ("TracingPolicy", "TracingPolicyNamespaced")
    if p.kind == "TracingPolicyNamespaced":
        assert p.metadata.namespace == "default"
    if "---" not in path.read_text():
        assert parse_policy(path.read_text(), namespace="default") == p


@pytest.mark.conformance
def test_example_multi_document_skips_pod() -> None:
    text = example("other", "file-block-kubectl-exec-access.yaml").read_text()
    with pytest.raises(PolicyError, match="expected a single YAML document, got 2"):
        parse_policy(text)
    (p,) = parse_policies(text)
    assert p.metadata.name == "enforce-security"
    assert p.spec.pod_selector is not None
    assert p.spec.pod_selector.match_labels == {"app": "bigsecret"}
    sel = p.spec.kprobes[0].selectors[0]
    assert [a.action for a in sel.match_actions] == ["Override", "Sigkill"]
    assert sel.match_actions[0].arg_error == -1
    assert sel.match_pids[0].is_namespace_pid and sel.match_pids[0].follow_forks


@pytest.mark.conformance
def test_namespaced_example_needs_namespace() -> None:
    text = example("quickstart", "file_monitoring_enforce.yaml").read_text()
    with pytest.raises(PolicyError) as exc:
        parse_policy(text)
    assert str(exc.value) == "metadata.namespace: required for a TracingPolicyNamespaced"
    assert parse_policy(text, namespace="ns1").namespace == "ns1"


@pytest.mark.conformance
def test_killer_example() -> None:
    p = parse_policy(example("tracingpolicy", "killer.yaml").read_text())
    assert resolve_list(p, "dups") == ["sys_dup", "sys_dup2", "__ia32_sys_dup"]
    assert resolve_list(p, "list:dups") == resolve_list(p, "dups")
    tp = p.spec.tracepoints[0]
    assert (tp.subsystem, tp.event, tp.raw) == ("raw_syscalls", "sys_enter", False)
    assert tp.args[0].type == "syscall64"
    act = tp.selectors[0].match_actions[0]
    assert (act.action, act.arg_error, act.arg_sig) == ("NotifyEnforcer", -1, 9)
    assert p.spec.enforcers[0].calls == ["list:dups"]


@pytest.mark.conformance
def test_generated_lists() -> None:
    p = parse_policy(example("tracingpolicy", "list-syscalls-generated.yaml").read_text())
    (lst,) = p.spec.lists
    assert lst.type == "generated_syscalls"
    names = resolve_list(p, lst.name)
    assert len(names) == len(X64) + 19  # + the syscalls newer than the table's headers (451-469)
    assert names[:2] == ["sys_read", "sys_write"]
    p = parse_policy(example("tracingpolicy", "list-generated-ftrace.yaml").read_text())
    assert find_list(p, "ksys").type == "generated_ftrace"
    assert resolve_list(p, "ksys") == ["^ksys_*"]
    with pytest.raises(PolicyError, match="unknown list 'nope'"):
        resolve_list(p, "nope")


# --- defaults and normalisation ------------------------------------------------------------------------
def test_crd_defaults() -> None:
    p = parse_policy(
        selector(
            """
      matchCapabilities:
      - operator: In
        values: [CAP_SYS_ADMIN]
      matchActions:
      - action: Post
        rateLimit: 1m
""",
            args="    args:\n    - index: 0\n",
        )
    )
    kp = p.spec.kprobes[0]
    assert kp.syscall is True
    assert kp.return_ is False
    assert kp.return_arg is None
    assert kp.args[0].type == "auto"
    assert kp.args[0].size_arg_index == 0
    sel = kp.selectors[0]
    assert sel.match_capabilities[0].type == "Effective"
    assert sel.match_capabilities[0].is_namespace_capability is False
    assert sel.match_actions[0].rate_limit_scope == "thread"
    assert rate_limit_seconds(sel.match_actions[0].rate_limit) == 60
    assert p.metadata.namespace == ""
    assert p.spec.loader is False
    assert p.spec.host_selector is None
    assert policy_mode(p) == "enforce"
    assert option(p, "policy-mode") is None


def test_empty_spec_and_null_sections() -> None:
    p = parse_policy(HEAD + "  kprobes:\n  tracepoints: ~\n")
    assert p.spec.kprobes == [] and p.spec.tracepoints == []
    p = parse_policy(HEAD.replace("spec:\n", "spec: {}\n"))
    assert p.name == "t"


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("GT", "GT"),
        ("GreaterThan", "GT"),
        ("gt", "GT"),
        ("LessThan", "LT"),
        ("lt", "LT"),
        ("eq", "Equal"),
        ("neq", "NotEqual"),
        ("NotSportPriv", "NotSPortPriv"),
        ("NotSPortPriv", "NotSPortPriv"),
        ("SubStringIgnCase", "SubStringIgnCase"),
        ("Mask", "Mask"),
    ],
)
def test_operator_aliases(written: str, canonical: str) -> None:
    p = parse_policy(
        selector(f"matchArgs:\n      - index: 0\n        operator: {written}\n        values: ['1']\n")
    )
    assert p.spec.kprobes[0].selectors[0].match_args[0].operator == canonical
    assert canonical in OPERATORS


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("Sigkill", "Sigkill"),
        ("sigkill", "Sigkill"),
        ("SIGKILL", "Sigkill"),
        ("notifyenforcer", "NotifyEnforcer"),
    ],
)
def test_action_case(written: str, canonical: str) -> None:
    extra = "  enforcers:\n  - calls: [sys_dup]\n"
    p = parse_policy(selector(f"matchActions:\n      - action: {written}\n") + extra)
    assert p.spec.kprobes[0].selectors[0].match_actions[0].action == canonical
    assert canonical in ACTIONS


def test_values_and_capabilities_normalised() -> None:
    p = parse_policy(
        selector(
            """
      matchArgs:
      - index: 0
        operator: Equal
        values: [1, 0x10, "7"]
      matchCapabilities:
      - type: Permitted
        operator: NotIn
        values: [cap_sys_admin, CAP_BPF]
      matchNamespaces:
      - namespace: Pid
        operator: In
        values: [host_ns, 4026531836]
      matchNamespaceChanges:
      - operator: In
        values: [mnt, User]
"""
        )
    )
    sel = p.spec.kprobes[0].selectors[0]
    assert sel.match_args[0].values == ["1", "16", "7"]
    assert sel.match_capabilities[0].values == ["CAP_SYS_ADMIN", "CAP_BPF"]
    assert sel.match_capabilities[0].type == "Permitted"
    assert sel.match_namespaces[0].values == ["host_ns", "4026531836"]
    assert sel.match_namespace_changes[0].values == ["Mnt", "User"]


def test_policy_mode_option() -> None:
    p = parse_policy(HEAD + "  options:\n  - name: policy-mode\n    value: monitor\n")
    assert policy_mode(p) == "monitor"
    assert option(p, "policy-mode") == "monitor"
    p.spec.options[0].value = "bogus"
    with pytest.raises(PolicyError, match="invalid policy-mode 'bogus'"):
        policy_mode(p)


def test_models_accept_python_names() -> None:
    kp = KProbeSpec(call="sys_dup", return_=True, return_arg={"index": 0, "type": "int"})  # type: ignore[arg-type]
    assert kp.return_ and kp.return_arg is not None and kp.return_arg.type == "int"
    dumped = kp.model_dump(exclude_defaults=True)
    assert dumped == {"call": "sys_dup", "return": True, "returnArg": {"index": 0, "type": "int"}}


def test_yaml_snake_case_keys_rejected() -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(kprobe("    return_arg:\n      index: 0\n"))
    assert str(exc.value) == "spec.kprobes[0].return_arg: unknown field"


def test_namespaced_policy() -> None:
    text = (
        HEAD.replace("kind: TracingPolicy\n", "kind: TracingPolicyNamespaced\n").replace(
            "  name: t\n", "  name: t\n  namespace: prod\n"
        )
        + "  kprobes: []\n"
    )
    p = parse_policy(text)
    assert p.namespaced and p.namespace == "prod"
    assert isinstance(p, TracingPolicy)
    with pytest.raises(PolicyError) as exc:
        parse_policy(text + "  hostSelector: {}\n")
    assert str(exc.value) == "spec.hostSelector: not allowed in a TracingPolicyNamespaced"
    assert parse_policy(text + "  hostSelector: null\n").spec.host_selector is None
    assert parse_policy(HEAD + "  hostSelector: {}\n").spec.host_selector is not None


def test_selector_macros() -> None:
    p = parse_policy(
        HEAD
        + "  selectorsMacros:\n    bash:\n      matchBinaries:\n"
        + "      - operator: In\n        values: [/bin/bash]\n"
        + "  kprobes:\n  - call: x\n    selectors:\n    - macros: [bash]\n"
    )
    assert p.spec.selectors_macros["bash"].match_binaries[0].values == ["/bin/bash"]
    assert p.spec.kprobes[0].selectors[0].macros == ["bash"]


# --- errors -------------------------------------------------------------------------------------------
SIX = "".join(f"    - index: {i}\n" for i in range(6))
ERRORS: list[tuple[str, str, str]] = [
    # (id, yaml, exact message)
    (
        "bad-arg-type",
        kprobe("    args:\n    - index: 0\n      type: int\n    - index: 1\n      type: strin\n"),
        "spec.kprobes[0].args[1].type: unknown argument type 'strin'",
    ),
    (
        "no-name",
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {}\nspec: {}\n",
        "metadata.name: required",
    ),
    ("empty-name", HEAD.replace("name: t", "name: ''") + "  loader: true\n", "metadata.name: required"),
    (
        "no-spec",
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\n",
        "spec: required",
    ),
    ("no-metadata", "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nspec: {}\n", "metadata: required"),
    (
        "bad-kind",
        HEAD.replace("kind: TracingPolicy", "kind: Pod"),
        "kind: must be TracingPolicy or TracingPolicyNamespaced, got string 'Pod'",
    ),
    (
        "bad-api",
        HEAD.replace("cilium.io/v1alpha1", "v1"),
        "apiVersion: must be cilium.io/v1alpha1, got string 'v1'",
    ),
    ("unknown-field", kprobe("    cal: y\n"), "spec.kprobes[0].cal: unknown field"),
    ("unknown-top", HEAD + "  kprobez: []\n", "spec.kprobez: unknown field"),
    ("unknown-meta", HEAD.replace("  name: t\n", "  name: t\n  nmae: u\n"), "metadata.nmae: unknown field"),
    (
        "bool-string",
        kprobe("    syscall: 'yes'\n"),
        "spec.kprobes[0].syscall: expected a boolean, got string 'yes'",
    ),
    (
        "int-string",
        kprobe("    args:\n    - index: '0'\n"),
        "spec.kprobes[0].args[0].index: expected an integer, got string '0'",
    ),
    (
        "negative-index",
        kprobe("    args:\n    - index: -1\n"),
        "spec.kprobes[0].args[0].index: must be >= 0, got -1",
    ),
    ("list-not-map", HEAD + "  kprobes: {}\n", "spec.kprobes: expected a list, got a mapping"),
    ("string-not-list", kprobe("    tags: abc\n"), "spec.kprobes[0].tags: expected a list, got string 'abc'"),
    ("call-missing", HEAD + "  kprobes:\n  - syscall: true\n", "spec.kprobes[0].call: required"),
    ("tp-missing", HEAD + "  tracepoints:\n  - subsystem: sched\n", "spec.tracepoints[0].event: required"),
    (
        "bad-action",
        selector("matchActions:\n      - action: sigkil\n"),
        "spec.kprobes[0].selectors[0].matchActions[0].action: unknown action 'sigkil' "
        "(one of: Post, FollowFD, Sigkill, UnfollowFD, Override, CopyFD, GetUrl, DnsLookup, NoPost, Signal, "
        "TrackSock, UntrackSock, NotifyEnforcer, CleanupEnforcerNotification, Set)",
    ),
    (
        "bad-capability",
        selector("matchCapabilities:\n      - operator: In\n        values: [CAP_FOO]\n"),
        "spec.kprobes[0].selectors[0].matchCapabilities[0].values[0]: unknown capability 'CAP_FOO'",
    ),
    (
        "bad-cap-type",
        selector(
            "matchCapabilities:\n      - type: Bounding\n        operator: In\n        values: [CAP_BPF]\n"
        ),
        "spec.kprobes[0].selectors[0].matchCapabilities[0].type: unknown capability type 'Bounding' "
        "(one of: Effective, Inheritable, Permitted)",
    ),
    (
        "bad-pid-op",
        selector("matchPIDs:\n      - operator: Prefix\n        values: [1]\n"),
        "spec.kprobes[0].selectors[0].matchPIDs[0].operator: unknown operator 'Prefix' (one of: In, NotIn)",
    ),
    (
        "bad-binary-op",
        selector("matchBinaries:\n      - operator: Equal\n        values: [/bin/sh]\n"),
        "spec.kprobes[0].selectors[0].matchBinaries[0].operator: unknown operator 'Equal' "
        "(one of: In, NotIn, Prefix, NotPrefix, Postfix, NotPostfix)",
    ),
    (
        "bad-namespace",
        selector("matchNamespaces:\n      - namespace: Foo\n        operator: In\n        values: [1]\n"),
        "spec.kprobes[0].selectors[0].matchNamespaces[0].namespace: unknown namespace 'Foo' "
        "(one of: Uts, Ipc, Mnt, Pid, PidForChildren, Net, Time, TimeForChildren, Cgroup, User)",
    ),
    (
        "bad-rate-limit",
        selector("matchActions:\n      - action: Post\n        rateLimit: 5x\n"),
        "spec.kprobes[0].selectors[0].matchActions[0].rateLimit: invalid rate limit '5x' "
        "(want a number with optional s, m or h suffix)",
    ),
    (
        "bad-rate-scope",
        selector("matchActions:\n      - action: Post\n        rateLimitScope: node\n"),
        "spec.kprobes[0].selectors[0].matchActions[0].rateLimitScope: unknown rateLimitScope 'node' "
        "(one of: thread, process, global)",
    ),
    (
        "arg-error-range",
        selector("matchActions:\n      - action: Override\n        argError: 3000000000\n"),
        "spec.kprobes[0].selectors[0].matchActions[0].argError: must be <= 2147483647, got 3000000000",
    ),
    (
        "match-value-float",
        selector("matchArgs:\n      - index: 0\n        operator: Equal\n        values: [1.5]\n"),
        "spec.kprobes[0].selectors[0].matchArgs[0].values[0]: expected a string, got number 1.5",
    ),
    (
        "bad-list-type",
        HEAD + "  lists:\n  - name: l\n    type: ftrace\n",
        "spec.lists[0].type: unknown list type 'ftrace' "
        "(one of: , syscalls, generated_syscalls, generated_ftrace)",
    ),
    (
        "return-no-arg",
        kprobe("    return: true\n"),
        "spec.kprobes[0].returnArg: required when return is true",
    ),
    (
        "uprobe-return-no-arg",
        HEAD + "  uprobes:\n  - path: /bin/sh\n    return: true\n",
        "spec.uprobes[0].returnArg: required when return is true",
    ),
    (
        "ret-action-no-return",
        kprobe("    returnArgAction: TrackSock\n"),
        "spec.kprobes[0].returnArgAction: requires return: true",
    ),
    (
        "call-unknown-list",
        HEAD + "  kprobes:\n  - call: list:nope\n",
        "spec.kprobes[0].call: unknown list 'nope'",
    ),
    (
        "inmap-unknown-list",
        selector("matchArgs:\n      - index: 0\n        operator: InMap\n        values: ['list:nope']\n"),
        "spec.kprobes[0].selectors[0].matchArgs[0].values[0]: unknown list 'nope'",
    ),
    (
        "enforcer-unknown-list",
        HEAD + "  enforcers:\n  - calls: ['list:nope']\n",
        "spec.enforcers[0].calls[0]: unknown list 'nope'",
    ),
    (
        "two-enforcers",
        HEAD + "  enforcers:\n  - calls: [sys_dup]\n  - calls: [sys_dup2]\n",
        "spec.enforcers: at most 1 enforcer allowed, got 2",
    ),
    (
        "notify-no-enforcer",
        selector("matchActions:\n      - action: NotifyEnforcer\n"),
        "spec.kprobes[0].selectors[0].matchActions[0].action: NotifyEnforcer requires spec.enforcers",
    ),
    (
        "set-outside-usdt",
        selector("matchActions:\n      - action: Set\n"),
        "spec.kprobes[0].selectors[0].matchActions[0].action: Set is only supported in usdts",
    ),
    (
        "dup-list",
        HEAD + "  lists:\n  - name: l\n  - name: l\n",
        "spec.lists[1].name: duplicate list name 'l'",
    ),
    (
        "ftrace-no-pattern",
        HEAD + "  lists:\n  - name: l\n    type: generated_ftrace\n",
        "spec.lists[0].pattern: required for a generated_ftrace list",
    ),
    (
        "syscall-list-unknown",
        HEAD + "  lists:\n  - name: l\n    type: syscalls\n    values: [sys_dup, sys_nope]\n",
        "spec.lists[0].values[1]: unknown syscall 'sys_nope'",
    ),
    (
        "size-arg-wrong-type",
        kprobe("    args:\n    - index: 1\n      type: int\n      sizeArgIndex: 3\n"),
        "spec.kprobes[0].args[0].sizeArgIndex: only valid for char_buf and char_iovec arguments",
    ),
    (
        "size-arg-max",
        kprobe("    args:\n    - index: 1\n      type: char_buf\n      sizeArgIndex: 16\n"),
        "spec.kprobes[0].args[0].sizeArgIndex: must be <= 15, got 16",
    ),
    (
        "match-index-missing",
        selector("matchArgs:\n      - index: 3\n        operator: Equal\n        values: ['1']\n"),
        "spec.kprobes[0].selectors[0].matchArgs[0].index: no argument with index 3 in args",
    ),
    (
        "match-args-position",
        selector("matchArgs:\n      - args: [1]\n        operator: Equal\n        values: ['1']\n"),
        "spec.kprobes[0].selectors[0].matchArgs[0].args[0]: no argument at position 1 (the hook has 1)",
    ),
    (
        "tp-match-position",
        HEAD
        + "  tracepoints:\n  - subsystem: raw_syscalls\n    event: sys_enter\n    args:\n    - index: 4\n"
        + "    selectors:\n    - matchArgs:\n      - index: 4\n"
        + "        operator: Equal\n        values: ['1']\n",
        "spec.tracepoints[0].selectors[0].matchArgs[0].index: no argument at position 4 (the hook has 1)",
    ),
    (
        "unknown-macro",
        selector("macros: [nope]\n"),
        "spec.kprobes[0].selectors[0].macros[0]: unknown selector macro 'nope'",
    ),
    (
        "bad-policy-mode",
        HEAD + "  options:\n  - name: policy-mode\n    value: monitr\n",
        "spec.options[0].value: invalid policy-mode 'monitr' (want enforce or monitor)",
    ),
    (
        "host-selector-labels",
        HEAD + "  hostSelector:\n    matchLabels: {a: b}\n",
        "spec.hostSelector: only null or {} is supported",
    ),
    (
        "label-selector-op",
        HEAD + "  podSelector:\n    matchExpressions:\n    - key: app\n      operator: Has\n",
        "spec.podSelector.matchExpressions[0].operator: unknown operator 'Has' "
        "(one of: In, NotIn, Exists, DoesNotExist)",
    ),
    (
        "macro-unknown-field",
        HEAD + "  selectorsMacros:\n    m1:\n      matchFoo: []\n",
        "spec.selectorsMacros.m1.matchFoo: unknown field",
    ),
    # limits (§3.5)
    (
        "too-many-selectors",
        kprobe("    selectors:\n" + "    - {}\n" * 6),
        "spec.kprobes[0].selectors: at most 5 selectors allowed, got 6",
    ),
    (
        "too-many-args",
        kprobe("    args:\n" + SIX),
        "spec.kprobes[0].args: at most 5 args+data allowed, got 6",
    ),
    (
        "too-many-args-data",
        kprobe(
            "    args:\n"
            + SIX[:75]
            + "    data:\n    - index: 0\n      source: current_task\n      resolve: pid\n"
        ),
        "spec.kprobes[0].args: at most 5 args+data allowed, got 6",
    ),
    (
        "too-many-tags",
        kprobe("    tags: [" + ", ".join(f"t{i}" for i in range(17)) + "]\n"),
        "spec.kprobes[0].tags: at most 16 tags allowed, got 17",
    ),
    (
        "long-message",
        kprobe("    message: " + "m" * 257 + "\n"),
        "spec.kprobes[0].message: longer than 256 characters (257)",
    ),
    (
        "too-many-pids",
        selector("matchPIDs:\n      - operator: In\n        values: [1, 2, 3, 4, 5]\n"),
        "spec.kprobes[0].selectors[0].matchPIDs[0].values: at most 4 values allowed, got 5",
    ),
    (
        "two-binaries",
        selector(
            "matchBinaries:\n      - operator: In\n        values: [/a]\n"
            "      - operator: In\n        values: [/b]\n"
        ),
        "spec.kprobes[0].selectors[0].matchBinaries: at most 1 entry allowed, got 2",
    ),
    (
        "too-many-ns-values",
        selector(
            "matchNamespaces:\n      - namespace: Mnt\n"
            "        operator: In\n        values: [1, 2, 3, 4, 5]\n"
        ),
        "spec.kprobes[0].selectors[0].matchNamespaces[0].values: at most 4 values allowed, got 5",
    ),
    (
        "too-many-match-args",
        selector("matchArgs:\n" + "      - index: 0\n        operator: Equal\n        values: ['1']\n" * 6),
        "spec.kprobes[0].selectors[0].matchArgs: at most 5 entries allowed, got 6",
    ),
    (
        "too-many-int-values",
        selector(
            "matchArgs:\n      - index: 0\n"
            "        operator: Equal\n        values: ['1', '2', '3', '4', '5']\n"
        ),
        "spec.kprobes[0].selectors[0].matchArgs[0].values: at most 4 values allowed for Equal, got 5",
    ),
    (
        "long-postfix",
        selector(
            "matchArgs:\n      - index: 0\n        operator: Postfix\n        values: ['"
            + "p" * 129
            + "']\n",
            args="    args:\n    - index: 0\n      type: string\n",
        ),
        "spec.kprobes[0].selectors[0].matchArgs[0].values[0]: postfix longer than 128 characters",
    ),
    # YAML level
    (
        "yaml-syntax",
        HEAD.replace("name: t", "name: [x"),
        "invalid YAML: expected ',' or ']', but got ':' (line 5, column 5)",
    ),
    (
        "yaml-tab",
        "\tfoo: bar\n",
        "invalid YAML: found character '\\t' that cannot start any token (line 1, column 1)",
    ),
    (
        "yaml-duplicate",
        HEAD + "  kprobes: []\n  kprobes: []\n",
        "invalid YAML: duplicate key 'kprobes' (line 7, column 3)",
    ),
    ("yaml-list", "- a\n- b\n", "policy must be a YAML mapping, got a list"),
    ("yaml-empty", "", "empty policy document"),
    ("yaml-multi", HEAD + "---\n" + HEAD, "expected a single YAML document, got 2"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in ERRORS], ids=[i for i, _, _ in ERRORS])
def test_bad_policy(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text)
    assert str(exc.value) == message
    assert exc.value.kind == "invalid"
    assert "\n" not in str(exc.value)


def test_limits_at_the_edge_are_fine() -> None:
    five = "".join(f"    - index: {i}\n" for i in range(5))
    parse_policy(kprobe("    args:\n" + five + "    selectors:\n" + "    - {}\n" * 5))
    parse_policy(
        kprobe("    tags: [" + ", ".join(f"t{i}" for i in range(16)) + "]\n    message: " + "m" * 256 + "\n")
    )
    parse_policy(selector("matchPIDs:\n      - operator: In\n        values: [1, 2, 3, 4]\n"))
    # many string values are fine (they go into hash maps)
    parse_policy(
        selector(
            "matchArgs:\n      - index: 0\n        operator: Equal\n        values: [a, b, c, d, e, f]\n",
            args="    args:\n    - index: 0\n      type: string\n",
        )
    )


def test_rate_limit_seconds() -> None:
    assert rate_limit_seconds("") == 0
    assert rate_limit_seconds("5") == 5
    assert rate_limit_seconds("10s") == 10
    assert rate_limit_seconds("2h") == 7200
    with pytest.raises(PolicyError):
        rate_limit_seconds("x")
