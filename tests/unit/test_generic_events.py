"""Generic (TracingPolicy) records: decoding, argument conversion and the three hook events."""

from __future__ import annotations

import base64
import socket
import struct
from typing import Any

import pytest

from tests.unit.generic_reference import GenericRecord, build_generic_event, decode_generic
from tetragon.abi import events_h as L
from tetragon.api.convert import event_to_proto, proto_to_event
from tetragon.events import compact_hooks
from tetragon.events.compact import format_compact
from tetragon.events.decode import GenericArg
from tetragon.events.generic_args import arg_variant, file_permission
from tetragon.events.generic_event import ACTION_NAMES
from tetragon.policy.hookinfo import ArgInfo, HookInfo
from tetragon.process.cache import with_tid

NODE, TIME = "node1", "2024-04-14T02:18:14.376304204Z"
PROC: dict[str, Any] = {
    "exec_id": "bm9kZTE6MTAwOjQy",
    "pid": 42,
    "uid": 0,
    "cwd": "/",
    "binary": "/usr/bin/cat",
    "arguments": "/etc/passwd",
    "flags": "execve clone",
    "start_time": "2024-04-14T02:18:10Z",
    "auid": 4294967295,
    "parent_exec_id": "bm9kZTE6NTA6MQ==",
    "refcnt": 1,
    "process_credentials": {"uid": 0, "gid": 0},
}
PARENT: dict[str, Any] = {"exec_id": "bm9kZTE6NTA6MQ==", "pid": 1, "uid": 0, "binary": "/bin/sh"}


def blob(kind: int, payload: bytes, index: int, flags: int = 0) -> bytes:
    return L.GEN_ARG.pack(kind, flags, index, len(payload)) + payload


def record(
    blobs: list[bytes],
    *,
    op: int = L.MSG_OP_GENERIC_KPROBE,
    action: int = L.ACTION_POST,
    return_action: int = L.ACTION_POST,
    flags: int = 0,
    ret: int = 0,
    tid: int = 43,
    nargs: int | None = None,
    size: int | None = None,
) -> bytes:
    body = b"".join(blobs)
    total = L.MSG_GENERIC.size + len(body) if size is None else size
    n = len(blobs) if nargs is None else nargs
    head = L.MSG_GENERIC.pack(
        op, 0, total, 123456789, 42, tid, 7, 2, action, return_action, 0, n, flags, 0, ret
    )
    return head + body


def int_blob(value: int, index: int = 0) -> bytes:
    return blob(L.GEN_KIND_INT, struct.pack("<Q", value & (1 << 64) - 1), index)


def path_blob(path: str, mode: int, index: int = 0, flags: int = 0) -> bytes:
    return blob(L.GEN_KIND_PATH, L.GEN_PATH.pack(mode, 0) + path.encode(), index, flags)


def one(kind: int, payload: bytes, typ: str, flags: int = 0) -> dict[str, Any]:
    return arg_variant(GenericArg(kind, flags, 0, payload), ArgInfo(type=typ))


def roundtrip(event: dict[str, Any]) -> None:
    """The event parses as a GetEventsResponse and prints back identically (order included)."""
    assert proto_to_event(event_to_proto(event)) == event


# --- decoding ------------------------------------------------------------------------------------


def test_decode_header_and_blobs() -> None:
    raw = record([int_blob(5), blob(L.GEN_KIND_STR, b"/etc/passwd", 1)], flags=L.GEN_F_RETURN, ret=-2)
    rec = decode_generic(memoryview(raw))
    assert (rec.op, rec.size, rec.ktime, rec.pid, rec.tid) == (
        L.MSG_OP_GENERIC_KPROBE,
        len(raw),
        123456789,
        42,
        43,
    )
    assert (rec.policy_id, rec.hook_id, rec.selector, rec.flags, rec.ret) == (7, 2, 0, L.GEN_F_RETURN, -2)
    assert rec.args == [
        GenericArg(L.GEN_KIND_INT, 0, 0, struct.pack("<Q", 5)),
        GenericArg(L.GEN_KIND_STR, 0, 1, b"/etc/passwd"),
    ]


def test_decode_never_reads_past_size() -> None:
    good = record([int_blob(5)])
    # bytes after `size` are ignored
    assert decode_generic(good + b"\xff" * 64).args == decode_generic(good).args
    # a second blob that lies beyond `size` is an error even though the buffer holds it
    with pytest.raises(ValueError):
        decode_generic(record([int_blob(5), int_blob(6, 1)], size=len(good)))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        record([])[:-1],
        record([int_blob(1)], size=10),
        record([int_blob(1)], size=10_000),
        record([int_blob(1)], nargs=2),
        record([blob(L.GEN_KIND_INT, b"\0" * 8, 0)[:-1]], size=L.MSG_GENERIC.size + 8),
        record([blob(L.GEN_KIND_STR, b"abc", 0)[:-1]], size=L.MSG_GENERIC.size + 10),
        record([blob(99, b"", 0)]),
        record([], op=L.MSG_OP_EXECVE),
    ],
)
def test_decode_malformed(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_generic(raw)


# --- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typ", "value", "expected"),
    [
        ("int", 0xFFFFFFFF, {"int_arg": -1}),
        ("int", (1 << 64) - 100, {"int_arg": -100}),
        ("int32", 7, {"int_arg": 7}),
        ("sint32", 0x80000000, {"int_arg": -(1 << 31)}),
        ("int16", 0xFFFF, {"int_arg": -1}),
        ("sint8", 0x80, {"int_arg": -128}),
        ("int8", 5, {"int_arg": 5}),
        ("uint32", 0xFFFFFFFF, {"uint_arg": 0xFFFFFFFF}),
        ("uint16", 0x12345, {"uint_arg": 0x2345}),
        ("uint8", 0x1FF, {"uint_arg": 0xFF}),
        ("uint64", (1 << 64) - 1, {"size_arg": str((1 << 64) - 1)}),
        ("ulong", 309, {"size_arg": "309"}),
        ("size_t", 4096, {"size_arg": "4096"}),
        ("int64", (1 << 64) - 1, {"long_arg": "-1"}),
        ("long", 1 << 40, {"long_arg": str(1 << 40)}),
        ("sint64", 1 << 63, {"long_arg": str(-(1 << 63))}),
        ("capability", 21, {"capability_arg": {"value": 21, "name": "CAP_SYS_ADMIN"}}),
        ("capability", 0, {"capability_arg": {"value": 0, "name": "CAP_CHOWN"}}),
        ("capability", 200, {"capability_arg": {"value": 200}}),
        ("syscall64", 309, {"syscall_id": {"id": 309, "abi": "x64"}}),
        ("syscall64", (1 << 31) | 11, {"syscall_id": {"id": 11, "abi": "i386"}}),
        ("syscall64", 0, {"syscall_id": {"abi": "x64"}}),
        ("fd", 3, {"int_arg": 3}),
        ("bpf_cmd", 5, {"bpf_cmd_arg": "BPF_PROG_LOAD"}),
        ("bpf_cmd", 0, {"bpf_cmd_arg": "BPF_MAP_CREATE"}),
        ("bpf_cmd", 999, {"int_arg": 999}),
        ("kernel_cap_t", 0x1FF, {"kernel_cap_t_arg": "00000000000001ff"}),
        ("nop", 12, {"int_arg": 12}),
        ("", 12, {"int_arg": 12}),
    ],
)
def test_int_types(typ: str, value: int, expected: dict[str, Any]) -> None:
    arg = one(L.GEN_KIND_INT, struct.pack("<Q", value & (1 << 64) - 1), typ)
    assert arg == expected
    roundtrip({"process_kprobe": {"args": [arg]}, "node_name": NODE})


def test_string_invalid_utf8_is_replaced() -> None:
    assert one(L.GEN_KIND_STR, b"/tmp/\xff\xfeok", "string") == {"string_arg": "/tmp/\ufffd\ufffdok"}
    assert one(L.GEN_KIND_STR, "/tmp/é".encode(), "filename") == {"string_arg": "/tmp/é"}


def test_bytes_and_truncated_bytes() -> None:
    data = b"hello\x00world"
    b64 = base64.b64encode(data).decode()
    full = one(L.GEN_KIND_BYTES, L.GEN_BYTES.pack(len(data)) + data, "char_buf")
    assert full == {"bytes_arg": b64}
    short = one(L.GEN_KIND_BYTES, L.GEN_BYTES.pack(50000) + data, "char_iovec")
    assert short == {"truncated_bytes_arg": {"bytes_arg": b64, "orig_size": "50000"}}
    # a smaller orig_size (the program read less than the buffer holds) is not a truncation
    assert one(L.GEN_KIND_BYTES, L.GEN_BYTES.pack(3) + data, "char_buf") == {"bytes_arg": b64}
    for arg in (full, short):
        roundtrip({"process_kprobe": {"args": [arg]}, "node_name": NODE})


@pytest.mark.parametrize(
    ("mode", "text"),
    [
        (0o100644, "-rw-r--r--"),
        (0o040755, "drwxr-xr-x"),
        (0o120777, "lrwxrwxrwx"),
        (0o020620, "crw--w----"),
        (0o060660, "brw-rw----"),
        (0o010600, "prw-------"),
        (0o140755, "srwxr-xr-x"),
        (0o104755, "-rwsr-xr-x"),
        (0o104644, "-rwSr--r--"),
        (0o102755, "-rwxr-sr-x"),
        (0o102745, "-rwxr-Sr-x"),
        (0o041777, "drwxrwxrwt"),
        (0o041776, "drwxrwxrwT"),
    ],
)
def test_file_permission(mode: int, text: str) -> None:
    assert file_permission(mode) == text


@pytest.mark.parametrize(
    ("typ", "key"),
    [
        ("file", "file_arg"),
        ("fd", "file_arg"),
        ("kiocb", "file_arg"),
        ("path", "path_arg"),
        ("dentry", "path_arg"),
        ("linux_binprm", "linux_binprm_arg"),
    ],
)
def test_path_variants(typ: str, key: str) -> None:
    payload = L.GEN_PATH.pack(0o100644, 0o2) + b"/etc/passwd"
    arg = one(L.GEN_KIND_PATH, payload, typ)
    assert arg == {key: {"path": "/etc/passwd", "permission": "-rw-r--r--"}}
    trunc = one(L.GEN_KIND_PATH, payload, typ, L.GEN_AF_TRUNC)
    assert trunc == {
        key: {"path": "/etc/passwd", "flags": "unresolvedPathComponents", "permission": "-rw-r--r--"}
    }
    assert list(trunc[key]) == ["path", "flags", "permission"]
    no_mode = one(L.GEN_KIND_PATH, L.GEN_PATH.pack(0, 0) + b"/x", typ)
    assert no_mode == {key: {"path": "/x"}}
    for a in (arg, trunc, no_mode):
        roundtrip({"process_kprobe": {"args": [a]}, "node_name": NODE})


@pytest.mark.parametrize("typ", ["filename", "string"])
def test_path_kind_as_string(typ: str) -> None:
    payload = L.GEN_PATH.pack(0o100644, 0) + b"/etc/shadow"
    assert one(L.GEN_KIND_PATH, payload, typ) == {"string_arg": "/etc/shadow"}


def _sock(family: int, saddr: bytes, daddr: bytes, **kw: int) -> bytes:
    return L.GEN_SOCK.pack(
        family,
        kw.get("type", 1),
        kw.get("protocol", 6),
        kw.get("state", 1),
        kw.get("mark", 0),
        kw.get("priority", 0),
        kw.get("sport", 45200),
        kw.get("dport", 443),
        kw.get("cookie", 0),
        saddr,
        daddr,
    )


def test_sock_ipv4() -> None:
    raw = _sock(
        socket.AF_INET,
        socket.inet_aton("10.32.0.28"),
        socket.inet_aton("104.198.14.52"),
        mark=5,
        priority=6,
        cookie=1 << 40,
    )
    arg = one(L.GEN_KIND_SOCK, raw, "sock")
    assert arg == {
        "sock_arg": {
            "family": "AF_INET",
            "type": "SOCK_STREAM",
            "protocol": "IPPROTO_TCP",
            "mark": 5,
            "priority": 6,
            "saddr": "10.32.0.28",
            "daddr": "104.198.14.52",
            "sport": 45200,
            "dport": 443,
            "cookie": str(1 << 40),
            "state": "TCP_ESTABLISHED",
        }
    }
    roundtrip({"process_kprobe": {"args": [arg]}, "node_name": NODE})


def test_sock_ipv6_udp_omits_zero_fields() -> None:
    saddr = socket.inet_pton(socket.AF_INET6, "2001:db8:0:0:1:0:0:1")
    daddr = socket.inet_pton(socket.AF_INET6, "::1")
    raw = _sock(socket.AF_INET6, saddr, daddr, type=2, protocol=17, state=0, sport=53, dport=0)
    assert one(L.GEN_KIND_SOCK, raw, "socket") == {
        "sock_arg": {
            "family": "AF_INET6",
            "type": "SOCK_DGRAM",
            "protocol": "IPPROTO_UDP",
            "saddr": "2001:db8::1:0:0:1",
            "daddr": "::1",
            "sport": 53,
        }
    }


def test_sockaddr() -> None:
    v4 = L.GEN_SOCKADDR.pack(socket.AF_INET, 80, socket.inet_aton("1.2.3.4") + bytes(12))
    assert one(L.GEN_KIND_SOCKADDR, v4, "sockaddr") == {
        "sockaddr_arg": {"family": "AF_INET", "addr": "1.2.3.4", "port": 80}
    }
    v6 = L.GEN_SOCKADDR.pack(socket.AF_INET6, 0, socket.inet_pton(socket.AF_INET6, "fe80::1"))
    assert one(L.GEN_KIND_SOCKADDR, v6, "sockaddr") == {
        "sockaddr_arg": {"family": "AF_INET6", "addr": "fe80::1"}
    }
    unix = L.GEN_SOCKADDR.pack(socket.AF_UNIX, 0, bytes(16))
    arg = one(L.GEN_KIND_SOCKADDR, unix, "sockaddr")
    assert arg == {"sockaddr_arg": {"family": "AF_UNIX"}}
    roundtrip({"process_kprobe": {"args": [arg]}, "node_name": NODE})


def test_cred() -> None:
    caps = (1 << 21) | 1
    raw = L.GEN_CRED.pack(
        1000, 1001, 0, 1003, 1004, 1005, 1006, 1007, 0x11, caps, 1 << 21, 0, 0, 0, 0, 4026531837
    )
    arg = one(L.GEN_KIND_CRED, raw, "cred")
    assert arg == {
        "process_credentials_arg": {
            "uid": 1000,
            "gid": 1001,
            "euid": 0,
            "egid": 1003,
            "suid": 1004,
            "sgid": 1005,
            "fsuid": 1006,
            "fsgid": 1007,
            "securebits": ["SecBitNoRoot", "SecBitKeepCaps"],
            "caps": {"permitted": ["CAP_CHOWN", "CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"]},
            "user_ns": {"level": 0, "uid": 0, "gid": 0, "ns": {"inum": 4026531837, "is_host": True}},
        }
    }
    roundtrip({"process_kprobe": {"args": [arg]}, "node_name": NODE})
    nested = L.GEN_CRED.pack(*([0] * 12), 2, 1000, 1000, 4026532000)
    user_ns = one(L.GEN_KIND_CRED, nested, "cred")["process_credentials_arg"]["user_ns"]
    assert user_ns == {"level": 2, "uid": 1000, "gid": 1000, "ns": {"inum": 4026532000}}


@pytest.mark.parametrize(
    ("kind", "typ", "expected"),
    [
        (L.GEN_KIND_STR, "string", {"string_arg": ""}),
        (L.GEN_KIND_BYTES, "char_buf", {"bytes_arg": ""}),
        (L.GEN_KIND_PATH, "file", {"file_arg": {}}),
        (L.GEN_KIND_PATH, "path", {"path_arg": {}}),
        (L.GEN_KIND_PATH, "linux_binprm", {"linux_binprm_arg": {}}),
        (L.GEN_KIND_PATH, "filename", {"string_arg": ""}),
        (L.GEN_KIND_SOCK, "sock", {"sock_arg": {}}),
        (L.GEN_KIND_SOCKADDR, "sockaddr", {"sockaddr_arg": {}}),
        (L.GEN_KIND_CRED, "cred", {"process_credentials_arg": {}}),
        (L.GEN_KIND_INT, "int", {"int_arg": 0}),
    ],
)
def test_error_blobs_give_empty_content(kind: int, typ: str, expected: dict[str, Any]) -> None:
    arg = one(kind, b"", typ, L.GEN_AF_ERR)
    assert arg == expected
    roundtrip({"process_kprobe": {"args": [arg]}, "node_name": NODE})


def test_labels_follow_the_variant() -> None:
    hook = HookInfo(
        policy_name="p",
        event="process_kprobe",
        function_name="security_file_open",
        args=(ArgInfo("file", label="target"), ArgInfo("int", label="mask")),
    )
    raw = record([path_blob("/etc/passwd", 0o100644), int_blob(4, 1)])
    ev = build_generic_event(decode_generic(raw), hook, PROC, None, None, NODE, TIME)
    args = ev["process_kprobe"]["args"]
    assert args == [
        {"file_arg": {"path": "/etc/passwd", "permission": "-rw-r--r--"}, "label": "target"},
        {"int_arg": 4, "label": "mask"},
    ]
    assert [list(a) for a in args] == [["file_arg", "label"], ["int_arg", "label"]]
    roundtrip(ev)


def test_blobs_are_matched_by_index() -> None:
    hook = HookInfo(policy_name="p", event="process_kprobe", args=(ArgInfo("uint64"), ArgInfo("string")))
    raw = record([blob(L.GEN_KIND_STR, b"x", 1), int_blob(9, 0)])
    ev = build_generic_event(decode_generic(raw), hook, PROC, None, None, NODE, TIME)
    assert ev["process_kprobe"]["args"] == [{"size_arg": "9"}, {"string_arg": "x"}]


# --- events --------------------------------------------------------------------------------------

KPROBE_HOOK = HookInfo(
    policy_name="file-monitoring",
    event="process_kprobe",
    function_name="security_file_permission",
    message="file access",
    tags=("observability.filesystem",),
    args=(ArgInfo("file"), ArgInfo("int")),
    return_arg=ArgInfo("int"),
)


def test_kprobe_event_doc_example() -> None:
    raw = record([path_blob("/etc/passwd", 0o100644), int_blob(2, 1)], flags=L.GEN_F_RETURN, ret=0)
    ancestors = [{"exec_id": "YTox", "pid": 0, "uid": 0, "binary": "/sbin/init"}]
    ev = build_generic_event(decode_generic(raw), KPROBE_HOOK, PROC, PARENT, ancestors, NODE, TIME)
    assert list(ev) == ["process_kprobe", "node_name", "time"]
    body = ev["process_kprobe"]
    assert list(body) == [
        "process",
        "parent",
        "function_name",
        "args",
        "return",
        "action",
        "policy_name",
        "return_action",
        "message",
        "tags",
        "ancestors",
    ]
    assert body["args"] == [{"file_arg": {"path": "/etc/passwd", "permission": "-rw-r--r--"}}, {"int_arg": 2}]
    assert body["return"] == {"int_arg": 0}
    assert body["action"] == body["return_action"] == "KPROBE_ACTION_POST"
    assert body["process"]["tid"] == 43
    assert PROC.get("tid") is None  # the caller's dict is not modified
    roundtrip(ev)


def test_kprobe_without_return_and_with_sigkill() -> None:
    hook = HookInfo(policy_name="p", event="process_kprobe", function_name="__x64_sys_write", return_arg=None)
    raw = record([], action=L.ACTION_SIGKILL, flags=L.GEN_F_ENFORCED)
    body = build_generic_event(decode_generic(raw), hook, PROC, None, None, NODE, TIME)["process_kprobe"]
    # Tetragon: return_action KPROBE_ACTION_POST on every process_kprobe, also without a return probe
    assert list(body) == ["process", "function_name", "action", "policy_name", "return_action"]
    assert body["action"] == "KPROBE_ACTION_SIGKILL"
    assert body["return_action"] == "KPROBE_ACTION_POST"
    # GEN_F_RETURN without a returnArg: return_action but no return
    raw = record([], flags=L.GEN_F_RETURN, ret=-13, return_action=L.ACTION_OVERRIDE)
    body = build_generic_event(decode_generic(raw), hook, PROC, None, None, NODE, TIME)["process_kprobe"]
    assert "return" not in body and body["return_action"] == "KPROBE_ACTION_OVERRIDE"


def test_kprobe_return_types() -> None:
    hook = HookInfo(policy_name="p", event="process_kprobe", function_name="f", return_arg=ArgInfo("int"))
    rec = decode_generic(record([], flags=L.GEN_F_RETURN, ret=-13))
    assert build_generic_event(rec, hook, PROC, None, None, NODE, TIME)["process_kprobe"]["return"] == {
        "int_arg": -13
    }
    hook = HookInfo(policy_name="p", event="process_kprobe", function_name="f", return_arg=ArgInfo("size_t"))
    rec = decode_generic(record([], flags=L.GEN_F_RETURN, ret=1 << 33))
    assert build_generic_event(rec, hook, PROC, None, None, NODE, TIME)["process_kprobe"]["return"] == {
        "size_arg": str(1 << 33)
    }


def test_all_actions() -> None:
    hook = HookInfo(policy_name="p", event="process_kprobe", function_name="f")
    assert len(ACTION_NAMES) == 15  # Set (USDT) included
    for kernel_id, name in ACTION_NAMES.items():
        ev = build_generic_event(
            decode_generic(record([], action=kernel_id)), hook, PROC, None, None, NODE, TIME
        )
        assert ev["process_kprobe"]["action"] == name
        roundtrip(ev)
    assert ACTION_NAMES[L.ACTION_CLEANUPENFORCER] == "KPROBE_ACTION_CLEANUPENFORCERNOTIFICATION"
    assert ACTION_NAMES[L.ACTION_SET] == "KPROBE_ACTION_SET"


@pytest.fixture
def syscalls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed syscall table instead of this machine's UAPI headers and tracefs."""
    tables = {"x64": {0: "read", 39: "getpid"}, "i386": {3: "read"}}
    signatures = {"read": (("unsigned int", "fd"), ("char *", "buf"), ("size_t", "count")), "getpid": ()}
    monkeypatch.setattr(compact_hooks, "_syscall_names", lambda abi="x64": tables.get(abi, {}))
    monkeypatch.setattr(compact_hooks, "_syscall_args", signatures.get)


def test_tracepoint_event(syscalls: None) -> None:
    hook = HookInfo(
        policy_name="raw-syscalls",
        event="process_tracepoint",
        subsys="raw_syscalls",
        tp_event="sys_enter",
        message="syscall",
        tags=("a", "b"),
        args=(ArgInfo("syscall64", index=4), ArgInfo("uint64", index=5)),
    )
    raw = record([int_blob(0, 0), int_blob(17, 1)], op=L.MSG_OP_GENERIC_TRACEPOINT)
    ev = build_generic_event(decode_generic(raw), hook, PROC, PARENT, [PARENT], NODE, TIME)
    body = ev["process_tracepoint"]
    assert list(body) == [
        "process",
        "parent",
        "subsys",
        "event",
        "args",
        "policy_name",
        "action",
        "message",
        "tags",
        "ancestors",
    ]
    assert body["args"] == [{"syscall_id": {"abi": "x64"}}, {"size_arg": "17"}]
    roundtrip(ev)
    assert (
        format_compact(ev)
        == "☎  syscall node1 /usr/bin/cat read(unsigned int fd=17, char * buf=?, size_t count=?)"
    )


def test_compact_raw_syscalls(syscalls: None) -> None:
    hook = HookInfo(
        policy_name="raw",
        event="process_tracepoint",
        subsys="raw_syscalls",
        tp_event="sys_enter",
        args=(ArgInfo("syscall64"), *[ArgInfo("uint64")] * 3),
    )

    def line(*values: int) -> str | None:
        blobs = [int_blob(v, i) for i, v in enumerate(values)]
        rec = decode_generic(record(blobs, op=L.MSG_OP_GENERIC_TRACEPOINT))
        return format_compact(build_generic_event(rec, hook, PROC, None, None, NODE, TIME))

    prefix = "☎  syscall node1 /usr/bin/cat "
    assert (
        line(0, 3, 0x7FFD0000, 832)
        == prefix + "read(unsigned int fd=3, char *buf=0x7ffd0000, size_t count=832)"
    )
    assert line(39) == prefix + "getpid()"
    assert line((1 << 31) | 3, 3) == prefix + "i386/read"
    assert line(1000) == prefix + "unknown"
    tp = {"process": PROC, "subsys": "raw_syscalls", "event": "sys_enter", "args": [{"long_arg": "39"}]}
    long_id = {"process_tracepoint": tp, "node_name": NODE}
    assert format_compact(long_id) == prefix + "getpid()"
    other = HookInfo(policy_name="p", event="process_tracepoint", subsys="sched", tp_event="sched_switch")
    ev = build_generic_event(decode_generic(record([])), other, PROC, None, None, NODE, TIME)
    assert format_compact(ev) == "⁉️ tracepoint node1 /usr/bin/cat sched sched_switch"


def test_uprobe_event() -> None:
    hook = HookInfo(
        policy_name="bash-readline",
        event="process_uprobe",
        path="/bin/bash",
        symbol="readline",
        message="readline",
        tags=("t",),
        args=(ArgInfo("string", label="prompt"),),
    )
    raw = record([blob(L.GEN_KIND_STR, b"$ ", 0)], op=L.MSG_OP_GENERIC_UPROBE)
    ev = build_generic_event(decode_generic(raw), hook, PROC, PARENT, [PARENT], NODE, TIME)
    body = ev["process_uprobe"]
    assert list(body) == [
        "process",
        "parent",
        "path",
        "symbol",
        "policy_name",
        "message",
        "args",
        "tags",
        "ancestors",
        "action",
    ]
    assert body["args"] == [{"string_arg": "$ ", "label": "prompt"}]
    roundtrip(ev)
    assert format_compact(ev) == "🕵️ uprobe  node1 /usr/bin/cat /bin/bash readline"
    by_offset = HookInfo(policy_name="p", event="process_uprobe", path="/bin/x", offset=0x1234)
    body = build_generic_event(decode_generic(raw), by_offset, PROC, None, None, NODE, TIME)["process_uprobe"]
    assert list(body) == ["process", "path", "policy_name", "args", "offset", "action"]
    assert body["offset"] == str(0x1234)


def test_unknown_event_type() -> None:
    with pytest.raises(ValueError):
        build_generic_event(
            decode_generic(record([])), HookInfo("p", "process_lsm"), PROC, None, None, NODE, TIME
        )


def test_no_process() -> None:
    ev = build_generic_event(decode_generic(record([])), KPROBE_HOOK, None, None, None, NODE, TIME)
    assert "process" not in ev["process_kprobe"]
    assert format_compact(ev) is None
    roundtrip(ev)


def test_tid_goes_to_its_declaration_position() -> None:
    out = with_tid(PROC, 99)
    keys = list(out)
    assert keys.index("tid") == keys.index("process_credentials") - 1
    assert list(with_tid({"exec_id": "x", "pid": 1, "tid": 1, "auid": 0}, 5).items())[2] == ("tid", 5)
    assert list(with_tid({"exec_id": "x"}, 5)) == ["exec_id", "tid"]


# --- compact -------------------------------------------------------------------------------------


def test_compact_kprobe_lines() -> None:
    hook = HookInfo(
        policy_name="p",
        event="process_kprobe",
        function_name="__x64_sys_write",
        args=(ArgInfo("fd"), ArgInfo("char_buf"), ArgInfo("size_t")),
    )
    raw = record(
        [
            path_blob("/tmp/out", 0o100644),
            blob(L.GEN_KIND_BYTES, L.GEN_BYTES.pack(3) + b"abc", 1),
            int_blob(3, 2),
        ]
    )
    ev = build_generic_event(decode_generic(raw), hook, PROC, None, None, NODE, TIME)
    roundtrip(ev)
    assert format_compact(ev) == "📝 write   node1 /usr/bin/cat /tmp/out 3 bytes"
    rec = decode_generic(record([path_blob("/etc/passwd", 0o100644), int_blob(4, 1)]))
    ev = build_generic_event(rec, KPROBE_HOOK, PROC, None, None, NODE, TIME)
    assert format_compact(ev) == "📚 read    node1 /usr/bin/cat /etc/passwd"
    connect = HookInfo(
        policy_name="p", event="process_kprobe", function_name="tcp_connect", args=(ArgInfo("sock"),)
    )
    sock = _sock(socket.AF_INET, socket.inet_aton("10.0.0.1"), socket.inet_aton("1.1.1.1"))
    rec = decode_generic(record([blob(L.GEN_KIND_SOCK, sock, 0)]))
    ev = build_generic_event(rec, connect, PROC, None, None, NODE, TIME)
    assert format_compact(ev) == "🔌 connect node1 /usr/bin/cat tcp 10.0.0.1:45200 -> 1.1.1.1:443"
    other = HookInfo(policy_name="p", event="process_kprobe", function_name="commit_creds")
    ev = build_generic_event(decode_generic(record([])), other, PROC, None, None, NODE, TIME)
    assert format_compact(ev) == "❓ syscall node1 /usr/bin/cat commit_creds"


def test_generic_record_dataclass_fields() -> None:
    rec = decode_generic(record([]))
    assert isinstance(rec, GenericRecord)
    assert rec.flags_common == 0 and rec.action == L.ACTION_POST and rec.args == []
