"""Policy → kernel configuration: mechanism choice, argument placement, selector encoding, refusals.

No BPF is loaded here, and nothing is read from this machine: tracepoint formats come from
tests/data/tracefs, a tracefs tree holding the `format` files (as a 6.18 x86_64 kernel writes
them) of the events these tests use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tetragon.abi import generic_cfg_h as G
from tetragon.policy.compile import compile_policy, parse_int
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import parse_policy
from tetragon.policy.schema import TracingPolicy

TRACEFS = Path(__file__).resolve().parents[1] / "data" / "tracefs"

NO_KPROBES = {
    "tracepoint": True,
    "raw_tp": True,
    "uprobe": True,
    "signal": True,
    "kprobe": False,
    "lsm": False,
}


def _policy(body: str, name: str = "p") -> TracingPolicy:
    return parse_policy(
        f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n{body}"
    )


def _compile(body: str, mode: str = "enforce", features: dict[str, bool] | None = None):  # type: ignore[no-untyped-def]
    return compile_policy(_policy(body), 7, mode, features or NO_KPROBES, tracefs=TRACEFS)


OPENAT = """
  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    args:
    - {index: 0, type: int}
    - {index: 1, type: filename}
    - {index: 2, type: int}
    returnArg: {index: 0, type: int}
    selectors:
    - matchArgs:
      - {index: 1, operator: Prefix, values: ["/etc/"]}
      - {index: 2, operator: Mask, values: ["1", "2"]}
      matchReturnArgs:
      - {operator: GT, values: ["0"]}
"""


def test_syscall_kprobe_is_served_by_syscall_tracepoints() -> None:
    plan = _compile(OPENAT)
    (hook,) = plan.hooks
    assert [(a.program, a.target) for a in hook.attach] == [
        ("gen_tp", ("syscalls", "sys_enter_openat")),
        ("gen_tp_ret", ("syscalls", "sys_exit_openat")),
    ]
    assert hook.info.function_name == "__x64_sys_openat"
    assert hook.info.event == "process_kprobe"
    cfg = hook.cfg
    assert (cfg.policy_id, cfg.hook_id, cfg.mech, cfg.op, cfg.nargs) == (7, 0, G.MECH_TRACEPOINT, 13, 3)
    assert (cfg.has_return, cfg.syscall) == (1, 1)
    # syscall arguments are 8-byte slots from offset 16; an int is read as its low 4 bytes, signed
    assert [(a.reader, a.off, a.size, a.is_signed) for a in cfg.args[:3]] == [
        (G.RD_INT, 16, 4, 1),
        (G.RD_FILENAME, 24, 8, 0),
        (G.RD_INT, 32, 4, 1),
    ]
    # the filename is relative to openat's dfd argument (the field before it in the format)
    assert (cfg.args[1].has_dirfd, cfg.args[1].dirfd_off) == (1, 16)
    sel = cfg.sel[0]
    assert (sel.nmatch, sel.has_ret) == (2, 1)
    m0, m1, ret = sel.match[0], sel.match[1], sel.match[G.GEN_MAX_MATCHARGS]
    assert (m0.arg, m0.op, m0.cmp, m0.nvals, m0.len[0], m0.str[0].value) == (1, 8, G.CMP_STR, 1, 5, b"/etc/")
    assert (m1.arg, m1.op, m1.cmp, list(m1.lo[:2])) == (2, 12, G.CMP_INT, [1, 2])
    assert (ret.arg, ret.op, ret.lo[0]) == (G.GEN_MATCH_RET, 1, 0)


def test_syscall_list_uses_raw_syscalls_and_an_id_set() -> None:
    plan = _compile(
        """
  lists:
  - {name: dups, type: syscalls, values: [sys_dup, sys_dup2, __ia32_sys_dup]}
  kprobes:
  - call: "list:dups"
"""
    )
    (hook,) = plan.hooks
    assert [a.target for a in hook.attach] == [("raw_syscalls", "sys_enter")]
    assert hook.cfg.syscall == 2 and hook.syscall_list
    assert sorted(hook.inmap) == [(0, 32), (0, 33), (0, 41 | 1 << 31)]


def test_tracepoint_args_count_common_fields_and_match_by_position() -> None:
    plan = _compile(
        """
  lists:
  - {name: dups, type: syscalls, values: [sys_dup]}
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args:
    - {index: 4, type: syscall64}
    selectors:
    - matchArgs:
      - {index: 0, operator: InMap, values: ["list:dups"]}
"""
    )
    (hook,) = plan.hooks
    assert hook.info.event == "process_tracepoint" and (hook.info.subsys, hook.info.tp_event) == (
        "raw_syscalls",
        "sys_enter",
    )
    assert (hook.cfg.args[0].reader, hook.cfg.args[0].off, hook.cfg.args[0].size) == (G.RD_SYSCALL64, 8, 8)
    m = hook.cfg.sel[0].match[0]
    assert (m.arg, m.op, m.map_id) == (0, G.OP_BY_NAME["InMap"], 1)
    assert hook.inmap == [(1, 32)]


def test_raw_tracepoint_reads_btf_args_by_slot() -> None:
    plan = _compile(
        """
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    args:
    - {index: 2, type: linux_binprm}
"""
    )
    (hook,) = plan.hooks
    assert [(a.kind, a.program, a.target) for a in hook.attach] == [
        ("raw_tp", "gen_rawtp", ("sched_process_exec",))
    ]
    assert (hook.cfg.mech, hook.cfg.args[0].reader, hook.cfg.args[0].off) == (G.MECH_RAW_TP, G.RD_BINPRM, 2)


def test_network_selector_values() -> None:
    plan = _compile(
        """
  kprobes:
  - call: sys_connect
    syscall: true
    args:
    - {index: 0, type: sock}
    - {index: 1, type: sockaddr}
    selectors:
    - matchArgs:
      - {index: 1, operator: DAddr, values: ["10.0.0.0/8", "fd00::/8"]}
      - {index: 1, operator: DPort, values: ["80", "8000:8080"]}
      - {index: 0, operator: Family, values: ["AF_INET6"]}
"""
    )
    cfg = plan.hooks[0].cfg
    assert (cfg.args[0].reader, cfg.args[1].reader) == (G.RD_SOCK_FD, G.RD_USOCKADDR)
    addr, port, fam = cfg.sel[0].match[0], cfg.sel[0].match[1], cfg.sel[0].match[2]
    assert (addr.cmp, list(addr.fam[:2]), list(addr.len[:2]), addr.lo[0]) == (
        G.CMP_SOCKADDR,
        [4, 6],
        [8, 8],
        0x0A000000,
    )
    assert addr.lo[1] == 0xFD00000000000000 and addr.hi[1] == 0
    assert [(port.lo[j], port.hi[j]) for j in range(2)] == [(80, 80), (8000, 8080)]
    assert (fam.cmp, fam.lo[0]) == (G.CMP_SOCK, 10)


def test_actions_and_process_filters() -> None:
    plan = _compile(
        """
  kprobes:
  - call: sys_setuid
    syscall: true
    args: [{index: 0, type: int}]
    selectors:
    - matchPIDs: [{operator: NotIn, followForks: true, isNamespacePID: true, values: [1]}]
      matchBinaries: [{operator: Prefix, values: ["/usr/bin/"], followChildren: true}]
      matchCapabilities: [{type: Effective, operator: In, values: [CAP_SYS_ADMIN]}]
      matchActions:
      - {action: Post, rateLimit: 1m, rateLimitScope: process}
      - {action: Signal, argSig: 10}
"""
    )
    sel = plan.hooks[0].cfg.sel[0]
    assert (sel.npids, sel.pids[0].op, sel.pids[0].flags, sel.pids[0].vals[0]) == (
        1,
        G.OP_BY_NAME["NotIn"],
        G.PF_FOLLOW | G.PF_NSPID,
        1,
    )
    assert (sel.has_bin, sel.bin.op, sel.bin.flags, sel.bin.str[0].value) == (1, 8, G.PF_FOLLOW, b"/usr/bin/")
    assert (sel.ncaps, sel.caps[0].mask) == (1, 1 << 21)
    assert (sel.nactions, sel.actions[0].id, sel.actions[0].rate_limit_ns, sel.actions[0].scope) == (
        2,
        0,
        60_000_000_000,
        G.RL_PROCESS,
    )
    assert (sel.actions[1].id, sel.actions[1].arg_sig) == (9, 10)


OVERRIDE = """
  kprobes:
  - call: sys_linkat
    syscall: true
    args: [{index: 1, type: string}]
    selectors:
    - matchActions: [{action: Override, argError: -1}]
"""


def test_override_is_refused_in_enforce_mode_and_reported_in_monitor_mode() -> None:
    with pytest.raises(PolicyError) as err:
        _compile(OVERRIDE)
    assert err.value.kind == "unsupported"
    assert (
        "Override" in str(err.value)
        and "bpf_override_return" in str(err.value)
        and "fmod_ret" in str(err.value)
    )
    plan = _compile(OVERRIDE, mode="monitor")
    assert plan.hooks[0].cfg.sel[0].actions[0].id == 4


@pytest.mark.parametrize(
    ("body", "features", "needle"),
    [
        ("  kprobes:\n  - call: tcp_connect\n    syscall: false\n", NO_KPROBES, "CONFIG_KPROBES"),
        (
            "  lists: [{name: fns, values: [tcp_connect, tcp_close]}]\n"
            "  kprobes:\n  - call: list:fns\n    syscall: false\n",
            NO_KPROBES,
            "CONFIG_KPROBES",
        ),
        (
            "  kprobes:\n  - call: tcp_connect\n    syscall: false\n",
            {**NO_KPROBES, "fentry": True},
            "fentry instead is not implemented yet",
        ),
        ("  lsmhooks:\n  - hook: file_open\n", NO_KPROBES, "BPF LSM is not active"),
        ("  loader: true\n  tracepoints: []\n", NO_KPROBES, "CONFIG_KPROBES"),
        (
            "  tracepoints:\n  - {subsystem: nosuch, event: thing}\n",
            NO_KPROBES,
            "does not exist on this kernel",
        ),
    ],
)
def test_refusals_name_the_hook_and_the_missing_feature(
    body: str, features: dict[str, bool], needle: str
) -> None:
    with pytest.raises(PolicyError) as err:
        _compile(body, features=features)
    assert needle in str(err.value)
    assert err.value.kind == "unsupported"
    assert "\n" not in str(err.value)


def test_notify_enforcer_with_an_error_needs_override() -> None:
    body = """
  lists: [{name: l, type: syscalls, values: [sys_dup]}]
  enforcers: [{calls: ["list:l"]}]
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args: [{index: 4, type: syscall64}]
    selectors:
    - matchActions: [{action: NotifyEnforcer, argError: -1, argSig: %s}]
"""
    with pytest.raises(PolicyError, match="argError"):
        _compile(body % "10")
    plan = _compile(body % "9")
    assert plan.enforcer_syscalls == [32]


def test_value_limits() -> None:
    long = "/" + "a" * 300
    with pytest.raises(PolicyError, match="longer than 256"):
        _compile(
            f"""
  kprobes:
  - call: sys_unlink
    syscall: true
    args: [{{index: 0, type: string}}]
    selectors: [{{matchArgs: [{{index: 0, operator: Prefix, values: ["{long}"]}}]}}]
"""
        )


@pytest.mark.parametrize(("text", "value"), [("10", 10), ("0x10", 16), ("010", 8), ("-1", -1), ("0", 0)])
def test_parse_int(text: str, value: int) -> None:
    assert parse_int(text) == value


def test_derived_selector_masks() -> None:
    """proc_sel / sel_args: what the entry program reads before deciding the selectors."""
    cfg = _compile(OPENAT).hooks[0].cfg
    assert (cfg.proc_sel, cfg.sel_args) == (0, 0b110)  # filename and flags; the return match needs no arg
    body = """
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - {index: 0, type: int}
    - {index: 1, type: string}
    - {index: 2, type: int}
    selectors:
    - matchArgs:
      - {index: 0, operator: Equal, values: ["3"]}
    - matchBinaries:
      - {operator: In, values: ["/bin/true"]}
    - matchPIDs:
      - {operator: NotIn, values: [1]}
      matchActions:
      - {action: Post, rateLimit: 1m}
"""
    cfg = _compile(body).hooks[0].cfg
    assert cfg.proc_sel == 0b110
    assert cfg.sel_args == 0b111  # a rateLimit reads every argument (of the 3 the hook has) first
    cfg = (
        _compile(body.replace("      matchActions:\n      - {action: Post, rateLimit: 1m}\n", ""))
        .hooks[0]
        .cfg
    )
    assert (cfg.proc_sel, cfg.sel_args) == (0b110, 0b001)
