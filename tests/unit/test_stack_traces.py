"""Stack traces of Post's kernelStackTrace / userStackTrace: the stack blobs after a record's arguments,
kernel symbols from a kallsyms table, user symbols from a live process's mappings and ELF symbols, and
the lists' places in a process_kprobe event (ProcessKprobe's field order)."""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
from pathlib import Path

import pytest

from tetragon.abi import events_h as L
from tetragon.abi import generic_cfg_h as G
from tetragon.api.convert import event_to_proto, proto_to_event
from tetragon.events.stack_traces import KernelSymbols, stack_blobs, user_stack, with_stack_traces
from tetragon.policy.compile import compile_policy
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import parse_policy

TRACEFS = Path(__file__).resolve().parents[1] / "data" / "tracefs"
FEATURES = {"tracepoint": True, "raw_tp": True, "uprobe": True, "signal": True, "kprobe": True}


def _record(args: list[tuple[int, bytes]], stacks: list[tuple[int, list[int]]]) -> bytes:
    body = b""
    for kind, payload in args:
        body += L.GEN_ARG.pack(kind, 0, 0, len(payload)) + payload
    for kind, addrs in stacks:
        payload = b"".join(struct.pack("<Q", a) for a in addrs)
        body += L.GEN_ARG.pack(kind, 0, 0, len(payload)) + payload
    return bytes(L.MSG_GENERIC.size) + body


def test_stack_blobs_follow_the_arguments_and_stop_at_a_zero_address() -> None:
    rec = _record(
        [(L.GEN_KIND_INT, struct.pack("<Q", 7)), (L.GEN_KIND_STR, b"abc")],
        [(L.GEN_KIND_KSTACK, [0xFFFF1, 0xFFFF2]), (L.GEN_KIND_USTACK, [0x401000, 0, 0])],
    )
    assert stack_blobs(rec, 2, len(rec)) == {
        L.GEN_KIND_KSTACK: [0xFFFF1, 0xFFFF2],
        L.GEN_KIND_USTACK: [0x401000],
    }
    assert stack_blobs(rec, 2, len(rec) - 8) == {L.GEN_KIND_KSTACK: [0xFFFF1, 0xFFFF2]}  # a cut blob is left


def test_kernel_symbols_name_the_function_and_the_offset_into_it(tmp_path: Path) -> None:
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text(
        "ffffffff81000000 T _stext\n"
        "ffffffff81001000 t do_one\n"
        "ffffffff81002000 D some_data\n"
        "ffffffffc0001000 t mod_fn\t[dummy]\n"
    )
    ksyms = KernelSymbols(kallsyms)
    assert ksyms.entry(0xFFFFFFFF81001010) == {"offset": "16", "symbol": "do_one"}
    assert ksyms.entry(0xFFFFFFFF81001000) == {"symbol": "do_one"}
    assert ksyms.entry(0xFFFFFFFF81002008) == {"offset": "4104", "symbol": "do_one"}  # data is no function
    assert ksyms.entry(0xFFFFFFFFC0001004) == {"offset": "4", "symbol": "mod_fn"}
    assert ksyms.entry(0x1000) == {"offset": "4096"}


def test_hidden_kernel_addresses_do_not_reread_kallsyms_per_frame(tmp_path: Path) -> None:
    """kptr_restrict: every address reads as 0, so every frame is "past the end"; the file is read
    again at most every RELOAD_S."""
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("0000000000000000 T _stext\n0000000000000000 t do_one\n")
    ksyms = KernelSymbols(kallsyms)
    assert ksyms.entry(0xFFFFFFFF81001010) == {"offset": str(0xFFFFFFFF81001010)}
    kallsyms.unlink()  # read again, it would raise
    assert ksyms.entry(0xFFFFFFFF81001020) == {"offset": str(0xFFFFFFFF81001020)}


def test_one_elf_file_is_parsed_once_whatever_path_reaches_it(tmp_path: Path) -> None:
    """Each process reaches libc through its own /proc/<pid>/map_files/<range>: the symbols are
    cached by the file's identity, not by the path."""
    from tetragon.events import stack_traces

    paths = [tmp_path / "a", tmp_path / "b"]
    shutil.copy("/bin/true", paths[0])
    os.link(paths[0], paths[1])  # another name, the same inode
    before = len(stack_traces._elf_cache)
    parsed = [stack_traces._elf_symbols_of(str(p)) for p in paths]
    assert parsed[0] is parsed[1] and len(stack_traces._elf_cache) == before + 1


def test_user_frames_are_symbolized_from_the_processs_own_mappings() -> None:
    libc = ctypes.CDLL(None)
    addr = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    assert addr is not None
    frames = user_stack(os.getpid(), [addr + 4, 8])
    assert frames[1] == {"offset": "8"}  # no mapping holds it
    first = frames[0]
    assert first["offset"] == "4"
    assert "getpid" in first["symbol"]
    assert "libc" in Path(first["module"]).name


def test_stack_lists_take_their_places_in_a_process_kprobe() -> None:
    event = {
        "process_kprobe": {
            "process": {},
            "function_name": "f",
            "args": [],
            "action": "KPROBE_ACTION_POST",
            "policy_name": "p",
            "return_action": "KPROBE_ACTION_POST",
            "tags": ["t"],
        },
        "node_name": "n",
        "time": "t",
    }
    rec = _record([], [(L.GEN_KIND_KSTACK, [0x10]), (L.GEN_KIND_USTACK, [8])])
    out = with_stack_traces(event, rec, 0, len(rec), os.getpid(), lambda a: {"symbol": f"k{a}"})
    body = out["process_kprobe"]
    assert list(body) == [
        "process",
        "function_name",
        "args",
        "action",
        "kernel_stack_trace",
        "policy_name",
        "return_action",
        "tags",
        "user_stack_trace",
    ]
    assert body["kernel_stack_trace"] == [{"symbol": "k16"}]
    assert body["user_stack_trace"] == [{"offset": "8"}]


def _compile(body: str):  # type: ignore[no-untyped-def]
    policy = parse_policy(
        f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: st\nspec:\n{body}"
    )
    return compile_policy(policy, 1, "enforce", FEATURES, tracefs=TRACEFS)


def test_post_carries_the_stack_bits_and_other_hooks_refuse_them() -> None:
    post = "matchActions: [{action: Post, kernelStackTrace: true, userStackTrace: true}]"
    kprobe = "  kprobes:\n  - call: ksys_read\n    args: [{index: 0, type: int}]\n    selectors:\n"
    plan = _compile(f"{kprobe}    - {post}\n")
    assert plan.hooks[0].cfg.sel[0].actions[0].stack == G.STACK_KERNEL | G.STACK_USER
    with pytest.raises(PolicyError, match="process_tracepoint events have no stack-trace fields"):
        tracepoint = "  tracepoints:\n  - subsystem: syscalls\n    event: sys_enter_openat\n    selectors:\n"
        _compile(f"{tracepoint}    - {post}\n")
    # a returned sock's blob comes after the stacks: refused, not misread
    with pytest.raises(PolicyError, match="cannot be combined with a returnArg of type sock"):
        ret = "    return: true\n    returnArg: {index: 0, type: sock}\n"
        _compile(kprobe.replace("    selectors:\n", ret + "    selectors:\n") + f"    - {post}\n")


def test_stack_traces_and_kernel_objects_survive_the_grpc_conversion() -> None:
    body = {
        "function_name": "f",
        "args": [
            {"module_arg": {"name": "m", "signature_ok": False, "tainted": ["TAINT_OUT_OF_TREE_MODULE"]}},
            {"user_ns_arg": {"level": 0, "uid": 0, "gid": 0, "ns": {"inum": 4026531837, "is_host": True}}},
            {"bpf_attr_arg": {"ProgType": "BPF_PROG_TYPE_KPROBE", "InsnCnt": 2, "ProgName": "p"}},
            {"bpf_map_arg": {"MapType": "BPF_MAP_TYPE_HASH", "KeySize": 4, "MapName": "m"}},
            {"perf_event_arg": {"KprobeFunc": "f", "Type": "PERF_TYPE_SOFTWARE", "Config": "9"}},
        ],
        "action": "KPROBE_ACTION_POST",
        "kernel_stack_trace": [{"offset": "16", "symbol": "do_one"}, {"symbol": "other"}],
        "policy_name": "p",
        "user_stack_trace": [
            {"offset": "7", "symbol": "mkdirat", "module": "/lib/libc.so.6"},
            {"offset": "8"},
        ],
    }
    event = {"process_kprobe": body, "node_name": "n", "time": "2026-01-01T00:00:00Z"}
    assert proto_to_event(event_to_proto(event)) == event
