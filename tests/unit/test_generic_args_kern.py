"""Kernel-object arguments of kernel functions (dentry, module, load_info, user_namespace, kiocb,
iov_iter, bpf_attr, bpf_map, perf_event): how they compile (readers_kern.h's readers, kprobes only) and
how their blobs render, key for key as Tetragon's JSON export writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tetragon.abi import events_h as L
from tetragon.abi import generic_cfg_h as G
from tetragon.events.decode import GenericArg
from tetragon.events.generic_args import arg_variant, make_converter
from tetragon.events.generic_args_kern import tainted
from tetragon.policy.compile import compile_policy
from tetragon.policy.errors import PolicyError
from tetragon.policy.hookinfo import ArgInfo
from tetragon.policy.load import parse_policy

HOST = {"tracepoint": True, "raw_tp": True, "uprobe": True, "signal": True, "kprobe": False}
KPROBE = {**HOST, "kprobe": True, "fentry": True}
TRACEFS = Path(__file__).resolve().parents[1] / "data" / "tracefs"


def _compile(body: str, features: dict[str, bool] = KPROBE):  # type: ignore[no-untyped-def]
    policy = parse_policy(
        f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: kt\nspec:\n{body}"
    )
    return compile_policy(policy, 3, "enforce", features, tracefs=TRACEFS)


@pytest.mark.parametrize(
    ("typ", "reader"),
    [
        ("dentry", G.RD_DENTRY),
        ("module", G.RD_MODULE),
        ("load_info", G.RD_LOAD_INFO),
        ("user_namespace", G.RD_USER_NS),
        ("kiocb", G.RD_KIOCB),
        ("iov_iter", G.RD_IOV_ITER),
        ("bpf_attr", G.RD_BPF_ATTR),
        ("bpf_map", G.RD_BPF_MAP),
        ("perf_event", G.RD_PERF_EVENT),
    ],
)
def test_each_kernel_object_type_has_its_reader(typ: str, reader: int) -> None:
    hook = _compile(f"  kprobes:\n  - call: some_function\n    args: [{{index: 1, type: {typ}}}]\n").hooks[0]
    assert (hook.cfg.args[0].reader, hook.cfg.args[0].off) == (reader, 1)
    assert hook.info.args[0].type == typ


def test_iov_iter_is_capped_like_a_buffer() -> None:
    body = """  kprobes:
  - call: tty_write
    args:
    - {index: 0, type: kiocb}
    - {index: 1, type: iov_iter, maxData: true}
    - {index: 1, type: iov_iter}
"""
    cfg = _compile(body).hooks[0].cfg
    assert [cfg.args[i].max_data for i in range(3)] == [0, L.GEN_BYTES_MAX, L.GEN_BYTES_DEFAULT]


def test_dentry_and_kiocb_compare_as_paths() -> None:
    body = """  kprobes:
  - call: security_inode_follow_link
    args: [{index: 0, type: dentry}]
    selectors:
    - matchArgs: [{index: 0, operator: Postfix, values: ["/link"]}]
"""
    match = _compile(body).hooks[0].cfg.sel[0].match[0]
    assert (match.op, match.cmp) == (G.OP_POSTFIX, G.CMP_STR)


def test_kernel_objects_are_refused_outside_kernel_functions() -> None:
    body = """  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args: [{index: 5, type: bpf_map}]
"""
    with pytest.raises(PolicyError, match="bpf_map argument is a kernel object: only kernel functions"):
        _compile(body)


def _render(kind: int, payload: bytes, typ: str, label: str = "") -> object:
    info = ArgInfo(type=typ, label=label)
    direct = arg_variant(GenericArg(kind, 0, 0, payload), info)
    converted = make_converter(kind, info, 0)(payload, 0, len(payload), 0)
    assert converted == ({**direct, "label": label} if label else direct)
    return converted


def test_module_renders_name_signature_and_taints() -> None:
    taints = 1 << 12 | 1 << 13 | 1 << 5  # out-of-tree, unsigned, and a bit the enum has no name for
    payload = L.GEN_MODULE.pack(b"hello_mod", taints, 0)
    assert _render(L.GEN_KIND_MODULE, payload, "module") == {
        "module_arg": {
            "name": "hello_mod",
            "signature_ok": False,
            "tainted": ["TAINT_OUT_OF_TREE_MODULE", "TAINT_UNSIGNED_MODULE"],
        }
    }
    payload = L.GEN_MODULE.pack(b"overlay", 0, 1)
    assert _render(L.GEN_KIND_MODULE, payload, "load_info", "mod") == {
        "module_arg": {"name": "overlay", "signature_ok": True},
        "label": "mod",
    }
    assert tainted(1 << 0 | 1 << 18) == ["TAINT_PROPRIETARY_MODULE", "TAINT_TEST_MODULE"]


def test_user_namespace_renders_as_user_ns_arg() -> None:
    host = L.GEN_USERNS.pack(0, 0, 0, 4026531837)
    assert _render(L.GEN_KIND_USERNS, host, "user_namespace") == {
        "user_ns_arg": {"level": 0, "uid": 0, "gid": 0, "ns": {"inum": 4026531837, "is_host": True}}
    }
    child = L.GEN_USERNS.pack(1, 1000, 1001, 4026532300)
    assert _render(L.GEN_KIND_USERNS, child, "user_namespace") == {
        "user_ns_arg": {"level": 1, "uid": 1000, "gid": 1001, "ns": {"inum": 4026532300}}
    }


def test_bpf_objects_render_with_tetragons_camelcase_keys() -> None:
    attr = L.GEN_BPF_ATTR.pack(2, 7, b"my_prog")
    assert _render(L.GEN_KIND_BPF_ATTR, attr, "bpf_attr") == {
        "bpf_attr_arg": {"ProgType": "BPF_PROG_TYPE_KPROBE", "InsnCnt": 7, "ProgName": "my_prog"}
    }
    bpf_map = L.GEN_BPF_MAP.pack(1, 4, 8, 16, b"counts")
    assert _render(L.GEN_KIND_BPF_MAP, bpf_map, "bpf_map") == {
        "bpf_map_arg": {
            "MapType": "BPF_MAP_TYPE_HASH",
            "KeySize": 4,
            "ValueSize": 8,
            "MaxEntries": 16,
            "MapName": "counts",
        }
    }
    assert _render(L.GEN_KIND_BPF_MAP, L.GEN_BPF_MAP.pack(999, 0, 0, 0, b""), "bpf_map") == {
        "bpf_map_arg": {"MapType": "999"}
    }
    event = L.GEN_PERF_EVENT.pack(6, 0, 16, b"do_sys_open")
    assert _render(L.GEN_KIND_PERF_EVENT, event, "perf_event") == {
        "perf_event_arg": {"KprobeFunc": "do_sys_open", "Type": "PERF_TYPE_MAX", "ProbeOffset": "16"}
    }
    sw = L.GEN_PERF_EVENT.pack(1, 9, 0, b"")
    assert _render(L.GEN_KIND_PERF_EVENT, sw, "perf_event") == {
        "perf_event_arg": {"Type": "PERF_TYPE_SOFTWARE", "Config": "9"}
    }


def test_dentry_kiocb_and_iov_iter_render_as_path_file_and_bytes() -> None:
    path = L.GEN_PATH.pack(0o120777, 0) + b"/tmp/x/link"
    assert _render(L.GEN_KIND_PATH, path, "dentry") == {
        "path_arg": {"path": "/tmp/x/link", "permission": "lrwxrwxrwx"}
    }
    tty = L.GEN_PATH.pack(0o20620, 0) + b"/dev/pts/3"
    assert _render(L.GEN_KIND_PATH, tty, "kiocb") == {
        "file_arg": {"path": "/dev/pts/3", "permission": "crw--w----"}
    }
    data = L.GEN_BYTES.pack(5) + b"hello"
    assert _render(L.GEN_KIND_BYTES, data, "iov_iter") == {"bytes_arg": "aGVsbG8="}


def test_call_not_found_drops_a_missing_function_and_keeps_the_rest() -> None:
    body = """  kprobes:
  - call: ksys_read
    args: [{index: 0, type: int}]
  - call: security_bpf_map_alloc
    args: [{index: 0, type: bpf_map}]
    ignore: {callNotFound: true}
  - call: ksys_write
    args: [{index: 0, type: int}]
    ignore: {callNotFound: true}
"""
    plan = _compile(body)
    assert [(h.hook_id, h.info.function_name) for h in plan.hooks] == [(0, "ksys_read"), (1, "ksys_write")]
    assert any(
        "security_bpf_map_alloc is not a traceable kernel function here: ignored" in w for w in plan.warnings
    )
    # without kprobes nothing is dropped: the policy is refused for what it needs
    with pytest.raises(PolicyError, match="kprobe"):
        _compile(body, HOST)


def test_call_not_found_keeps_a_syscall_hook_and_drops_a_name_that_is_no_syscall() -> None:
    """`sys_openat` is no entry of available_filter_functions (`__x64_sys_openat` is): a syscall hook
    is served by the syscall's tracepoint and kept; only a name that is no syscall is dropped."""
    body = """  kprobes:
  - call: sys_openat
    syscall: true
    args: [{index: 0, type: int}]
    ignore: {callNotFound: true}
  - call: sys_no_such_call
    syscall: true
    args: [{index: 0, type: int}]
    ignore: {callNotFound: true}
"""
    plan = _compile(body)  # with kprobes (the fake tracefs)
    assert [h.hook_id for h in plan.hooks] == [0]
    assert any("sys_no_such_call is not a traceable kernel function here" in w for w in plan.warnings)
    # without kprobes (this host) the syscall hook is kept too; the other one needs a kprobe: refused
    assert [h.hook_id for h in _compile(body.split("  - call: sys_no_such_call")[0], HOST).hooks] == [0]
    with pytest.raises(PolicyError, match="kprobe"):
        _compile(body, HOST)
