"""Kernel-function kprobes: the mechanism per kernel (kprobe.multi, else a kprobe per function, else
refused), how their arguments are read (registers; kernel memory), `return: true` and `nop`.

No BPF is loaded here: the kernel's features are given, as the feature probe would report them, and
tracepoint formats come from tests/data/tracefs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tetragon.abi import events_h as E
from tetragon.abi import generic_cfg_h as G
from tetragon.policy.compile import compile_policy
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import parse_policy

HOST = {"tracepoint": True, "raw_tp": True, "uprobe": True, "signal": True, "kprobe": False}
KPROBE = {**HOST, "kprobe": True, "fentry": True}  # Debian 6.1
KPROBE_MULTI = {**KPROBE, "kprobe_multi": True}  # Debian 6.12
TRACEFS = Path(__file__).resolve().parents[1] / "data" / "tracefs"

FILE_MONITOR = """
  kprobes:
  - call: security_mmap_file
    syscall: false
    return: true
    args:
    - {index: 0, type: file}
    - {index: 1, type: uint32}
    - {index: 2, type: nop}
    returnArg: {index: 0, type: int}
    selectors:
    - matchArgs: [{index: 0, operator: Prefix, values: ["/etc/"]}]
      matchActions: [{action: Sigkill}]
"""


def _compile(body: str, features: dict[str, bool], mode: str = "enforce"):  # type: ignore[no-untyped-def]
    policy = parse_policy(
        f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: kf\nspec:\n{body}"
    )
    return compile_policy(policy, 3, mode, features, tracefs=TRACEFS)


def test_kprobe_multi_serves_a_kernel_function_with_its_return_attached_first() -> None:
    hook = _compile(FILE_MONITOR, KPROBE_MULTI).hooks[0]
    assert [(a.kind, a.program, a.target) for a in hook.attach] == [
        ("kprobe_multi", "gen_kretprobe_multi", ("security_mmap_file",)),
        ("kprobe_multi", "gen_kprobe_multi", ("security_mmap_file",)),
    ]
    assert hook.sensor == "generic_kprobe"
    assert (hook.info.event, hook.info.function_name, hook.info.policy_name) == (
        "process_kprobe",
        "security_mmap_file",
        "kf",
    )
    cfg = hook.cfg
    assert (cfg.mech, cfg.op, cfg.syscall, cfg.has_return, cfg.ret_signed) == (
        G.MECH_KPROBE,
        E.MSG_OP_GENERIC_KPROBE,
        G.SYSCALL_NONE,
        1,
        1,
    )
    # registers: the argument's position; file is a kernel pointer, nop is never read
    assert [(cfg.args[i].reader, cfg.args[i].off) for i in range(cfg.nargs)] == [
        (G.RD_FILE, 0),
        (G.RD_INT, 1),
        (0, 2),
    ]
    assert (cfg.args[1].size, cfg.args[1].is_signed) == (4, 0)
    assert [a.type for a in hook.info.args] == ["file", "uint32", "nop"]
    assert hook.info.return_arg is not None and hook.info.return_arg.type == "int"
    sel = cfg.sel[0]
    assert (sel.nmatch, sel.match[0].arg, sel.match[0].op, sel.match[0].cmp) == (1, 0, G.OP_PREFIX, G.CMP_STR)
    assert (sel.nactions, sel.actions[0].id) == (1, E.ACTION_SIGKILL)


def test_without_kprobe_multi_each_function_gets_a_kprobe() -> None:
    hook = _compile(FILE_MONITOR, KPROBE).hooks[0]
    assert [(a.kind, a.program, a.target) for a in hook.attach] == [
        ("kprobe", "gen_kretprobe", ("security_mmap_file", "0")),
        ("kprobe", "gen_kprobe", ("security_mmap_file", "0")),
    ]
    plain = _compile("  kprobes:\n  - {call: fd_install, syscall: false}\n", KPROBE).hooks[0]
    assert [(a.kind, a.program) for a in plain.attach] == [("kprobe", "gen_kprobe")]
    assert plain.cfg.has_return == 0


@pytest.mark.parametrize(
    ("arg_type", "reader"),
    [
        ("string", G.RD_STR),
        ("filename", G.RD_KFILENAME),
        ("path", G.RD_PATH),
        ("cred", G.RD_CRED),
        ("fd", G.RD_FD),
        ("int", G.RD_INT),
        ("size_t", G.RD_INT),
        ("linux_binprm", G.RD_BINPRM),
        ("sock", G.RD_SOCK),
        ("char_buf", G.RD_BUF),
    ],
)
def test_kernel_function_argument_readers(arg_type: str, reader: int) -> None:
    body = (
        f"  kprobes:\n  - call: some_function\n    syscall: false\n    args: [{{index: 1, type: {arg_type}}}]"
    )
    cfg = _compile(body + "\n", KPROBE_MULTI).hooks[0].cfg
    assert (cfg.args[0].reader, cfg.args[0].off) == (reader, 1)


def test_the_default_syscall_true_on_a_kernel_function_is_still_a_kprobe() -> None:
    hook = _compile("  kprobes:\n  - call: commit_creds\n    args: [{index: 0, type: cred}]\n", KPROBE).hooks[
        0
    ]
    assert [a.program for a in hook.attach] == ["gen_kprobe"]


@pytest.mark.parametrize(
    ("body", "features", "needle"),
    [
        # the host: no kprobes at all
        (
            '  lists: [{name: k, type: generated_ftrace, pattern: "^ksys_"}]\n'
            '  kprobes:\n  - call: "list:k"\n',
            HOST,
            "call list:k (generated_ftrace list of kernel functions): this kernel has no kprobes",
        ),
        (
            "  kprobes:\n  - {call: fd_install, syscall: false}\n",
            HOST,
            "this kernel has no kprobes (CONFIG_KPROBES)",
        ),
        (
            "  kprobes:\n  - call: security_file_open\n    syscall: false\n"
            "    args: [{index: 0, type: nop}]\n"
            "    selectors: [{matchArgs: [{index: 0, operator: Equal, values: ['1']}]}]\n",
            KPROBE,
            "type nop is never read",
        ),
        (
            "  kprobes:\n  - call: f\n    syscall: false\n    args: [{index: 6, type: int}]\n",
            KPROBE,
            "first 6",
        ),
        ("  kprobes:\n  - {call: f, syscall: false, return: true}\n", KPROBE, "returnArg"),
        (
            "  kprobes:\n  - call: sk_alloc\n    syscall: false\n    return: true\n"
            "    returnArg: {index: 0, type: int}\n    returnArgAction: TrackSock\n",
            KPROBE,
            "TrackSock needs a returnArg of type sock",
        ),
        (
            "  kprobes:\n  - call: f\n    syscall: false\n    args: [{index: 0, type: char_iovec}]\n",
            KPROBE,
            "user memory",
        ),
        (
            "  kprobes:\n  - call: f\n    syscall: false\n"
            "    args: [{index: 0, type: char_buf, returnCopy: true}]\n",
            KPROBE,
            "returnCopy on a kernel function's char_buf is not implemented yet",
        ),
    ],
)
def test_kernel_function_refusals(body: str, features: dict[str, bool], needle: str) -> None:
    with pytest.raises(PolicyError) as err:
        _compile(body, features)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_syscall_kprobes_stay_on_tracepoints_where_kprobes_exist() -> None:
    hook = _compile(
        "  kprobes:\n  - call: sys_setuid\n    syscall: true\n    args: [{index: 0, type: int}]\n",
        KPROBE_MULTI,
    ).hooks[0]
    assert [(a.kind, a.program, a.target) for a in hook.attach] == [
        ("tracepoint", "gen_tp", ("syscalls", "sys_enter_setuid"))
    ]


LIST = """
  lists:
  - {name: fns, values: [tcp_connect, tcp_close]}
  - {name: ksys, type: generated_ftrace, pattern: "^ksys_(read|write)$"}
  kprobes:
  - {call: "list:fns", syscall: false, args: [{index: 0, type: sock}]}
  - {call: "list:ksys"}
"""


def test_a_list_of_kernel_functions_is_one_hook_naming_its_function_by_cookie() -> None:
    multi, ftrace = _compile(LIST, KPROBE_MULTI).hooks
    assert [(a.kind, a.program, a.target) for a in multi.attach] == [
        ("kprobe_multi", "gen_kprobe_multi", ("tcp_connect", "tcp_close"))
    ]
    assert multi.cfg.func_cookie == 1
    assert multi.info.extra == {"kernel_functions": "tcp_connect,tcp_close"}
    # generated_ftrace: the pattern over tracefs available_filter_functions, each name once
    assert ftrace.attach[0].target == ("ksys_read", "ksys_write")
    single = _compile(LIST, KPROBE).hooks[0]
    assert [(a.program, a.target) for a in single.attach] == [
        ("gen_kprobe", ("tcp_connect", "0")),
        ("gen_kprobe", ("tcp_close", "1")),
    ]
    plain = _compile("  kprobes:\n  - {call: fd_install, syscall: false}\n", KPROBE_MULTI).hooks[0]
    assert (plain.cfg.func_cookie, plain.info.extra) == (0, {})


def test_a_generated_ftrace_pattern_matching_nothing_is_refused() -> None:
    body = '  lists: [{name: l, type: generated_ftrace, pattern: "^no_such_fn"}]\n'
    body += '  kprobes:\n  - call: "list:l"\n'
    with pytest.raises(PolicyError, match="matches no traceable kernel function"):
        _compile(body, KPROBE_MULTI)


def test_records_of_a_list_hook_are_named_by_their_cookie(monkeypatch: pytest.MonkeyPatch) -> None:
    """The manager names a record's function from its func_id (the attach cookie): the list's position."""
    from tetragon.sensors.manager import PolicyManager

    monkeypatch.setattr(PolicyManager, "_load", lambda self, entry: None)  # no BPF in unit tests
    manager = PolicyManager(lambda: {}, KPROBE_MULTI)
    doc = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: kl\nspec:\n"
    status = manager.add(doc + LIST.split('  - {call: "list:ksys"}')[0])
    assert [manager.hook(status.id, 0, k).function_name for k in (0, 1)] == [  # type: ignore[union-attr]
        "tcp_connect",
        "tcp_close",
    ]


def test_char_buf_size_comes_from_the_size_argument_register() -> None:
    body = "  kprobes:\n  - call: vfs_write\n    syscall: false\n"
    body += "    args: [{index: 1, type: char_buf, sizeArgIndex: 3}, {index: 2, type: size_t}]\n"
    arg = _compile(body, KPROBE).hooks[0].cfg.args[0]
    assert (arg.reader, arg.off, arg.has_size, arg.size_off, arg.max_data) == (G.RD_BUF, 1, 1, 2, 4096)


def test_the_disable_kprobe_multi_option_asks_for_a_kprobe_per_function() -> None:
    body = "  options: [{name: disable-kprobe-multi, value: 'true'}]\n" + LIST.replace(
        '  - {call: "list:ksys"}\n', ""
    )
    hook = _compile(body, KPROBE_MULTI).hooks[0]
    assert [(a.kind, a.target) for a in hook.attach] == [
        ("kprobe", ("tcp_connect", "0")),
        ("kprobe", ("tcp_close", "1")),
    ]


FMODRET = {**KPROBE, "fmodret": True, "lsm": True}  # the Debian guests: fmod_ret, no bpf_override_return


def _override(call: str, actions: str = "[{action: Override, argError: -13}]", extra: str = "") -> str:
    return f"""
  kprobes:
  - call: {call}
    syscall: false{extra}
    args: [{{index: 0, type: file}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["/etc/"]}}]
      matchActions: {actions}
"""


@pytest.mark.parametrize("mode", ["enforce", "monitor"])
def test_override_on_a_security_function_is_an_fmod_ret_program(mode: str) -> None:
    hook = _compile(_override("security_file_open"), FMODRET, mode).hooks[0]
    assert [(a.kind, a.program, a.target) for a in hook.attach] == [
        ("fmod_ret", "gen_fmodret", ("security_file_open",))
    ]
    cfg = hook.cfg
    assert cfg.mech == G.MECH_RAW_TP  # ctx is u64 args[]
    assert cfg.args[0].reader == G.RD_FILE
    assert (cfg.sel[0].actions[0].id, cfg.sel[0].actions[0].arg_error) == (E.ACTION_OVERRIDE, -13)
    assert hook.info.function_name == "security_file_open"


def test_sigkill_and_override_together() -> None:
    actions = "[{action: Sigkill}, {action: Override, argError: -1}]"
    hook = _compile(_override("security_path_link", actions), FMODRET).hooks[0]
    assert hook.attach[0].kind == "fmod_ret"
    acts = hook.cfg.sel[0].actions
    assert [(acts[k].id, acts[k].arg_error) for k in range(hook.cfg.sel[0].nactions)] == [
        (E.ACTION_SIGKILL, 0),
        (E.ACTION_OVERRIDE, -1),
    ]


def test_a_kprobe_without_override_stays_a_kprobe_where_fmod_ret_exists() -> None:
    hook = _compile(_override("security_file_open", "[{action: Post}]"), FMODRET).hooks[0]
    assert [a.kind for a in hook.attach] == ["kprobe"]


@pytest.mark.parametrize(
    ("call", "features", "extra", "needle"),
    [
        ("security_file_open", KPROBE_MULTI, "", "refuses fmod_ret programs"),
        ("security_file_open", HOST, "", "refuses fmod_ret programs"),
        ("vfs_open", FMODRET, "", "vfs_open is not a security_* function"),
        ("security_file_open", FMODRET, "\n    return: true\n    returnArg: {index: 0, type: int}", "return"),
    ],
)
def test_override_refusals_in_enforce_mode(
    call: str, features: dict[str, bool], extra: str, needle: str
) -> None:
    with pytest.raises(PolicyError) as err:
        _compile(_override(call, extra=extra), features)
    msg = str(err.value)
    assert err.value.kind == "unsupported"
    assert needle in msg and "fmod_ret" in msg and "bpf_override_return" in msg and "monitor mode" in msg


def test_override_on_a_list_is_refused_and_monitor_mode_falls_back_to_kprobes() -> None:
    body = """
  lists:
  - {name: fns, type: generated_ftrace, pattern: "^ksys_(read|write)$"}
  kprobes:
  - call: "list:fns"
    syscall: false
    selectors:
    - matchActions: [{action: Override, argError: -1}]
"""
    with pytest.raises(PolicyError, match="list of functions"):
        _compile(body, FMODRET)
    hook = _compile(_override("vfs_open"), FMODRET, "monitor").hooks[0]
    assert [a.kind for a in hook.attach] == ["kprobe"]  # reported, never done


def test_override_on_a_syscall_is_refused_naming_its_tracepoint() -> None:
    body = """
  kprobes:
  - call: sys_linkat
    syscall: true
    selectors:
    - matchActions: [{action: Override, argError: -1}]
"""
    with pytest.raises(PolicyError, match="sys_linkat is a syscall, served by its tracepoint"):
        _compile(body, FMODRET)
