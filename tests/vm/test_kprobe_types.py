"""Runs inside the qemu guest (tests/vm/run_vm.py): the kernel-object argument types of kernel functions
(dentry, user_namespace, kiocb + iov_iter, bpf_attr, bpf_map, perf_event; the module hooks attach),
and Post's kernelStackTrace/userStackTrace on a kernel function, through the real agent with one policy of
several hooks (one agent start for the file).

The hooks are those of Tetragon's examples (security_inode_follow_link, tty.yaml, bpf.yaml with its
`ignore: callNotFound`, monitor-kernel-modules); each event asserted here comes from a workload this
test ran (its pid, and a name or value of its own), checked field by field as Tetragon exports it.
"""

from __future__ import annotations

import base64
import ctypes
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, Event, body
from tests.vm.guestagent import guest_agent, kprobe_of
from tetragon.bpf.features import probe_features
from tetragon.events.generic_args import file_permission
from tetragon.events.generic_args_kern import PERF_TYPE_NAMES

pytestmark = pytest.mark.vm

BASE = Path(f"/tmp/kptypes-{uuid.uuid4().hex[:8]}")
LINK = BASE / f"{BASE.name}-link"
CAP_SYS_TIME = 25
PROG_NAME, MAP_NAME = "kpt_prog", "kpt_map"

POLICY = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: vm-kprobe-types
spec:
  kprobes:
  - call: security_inode_follow_link
    syscall: false
    args: [{{index: 0, type: dentry}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Postfix, values: ["/{LINK.name}"]}}]
      matchActions: [{{action: Post, kernelStackTrace: true, userStackTrace: true}}]
  - call: cap_capable
    syscall: false
    args: [{{index: 1, type: user_namespace}}, {{index: 2, type: capability}}]
    selectors:
    - matchArgs: [{{index: 2, operator: Equal, values: ["{CAP_SYS_TIME}"]}}]
  - call: tty_write
    syscall: false
    args: [{{index: 0, type: kiocb}}, {{index: 1, type: iov_iter, maxData: true}}]
    selectors:
    - matchArgs: [{{index: 0, operator: Prefix, values: ["/dev/pts/"]}}]
  - call: bpf_check
    syscall: false
    args: [{{index: 1, type: bpf_attr}}]
  - call: security_perf_event_alloc
    syscall: false
    args: [{{index: 0, type: perf_event}}]
  - call: security_bpf_map_alloc
    syscall: false
    args: [{{index: 0, type: bpf_map}}]
    ignore: {{callNotFound: true}}
  - call: security_bpf_map_create
    syscall: false
    args: [{{index: 0, type: bpf_map}}]
    ignore: {{callNotFound: true}}
  - call: do_init_module
    syscall: false
    args: [{{index: 0, type: module}}]
  - call: free_module
    syscall: false
    args: [{{index: 0, type: module}}]
"""
# monitor-signed-kernel-modules.yaml's find_module_sections (load_info) is inlined in Debian's kernels: not
# traceable there, for Tetragon too
HOOKS = 8  # one of security_bpf_map_alloc (before 6.9) / security_bpf_map_create is not in the kernel

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_BPF, SYS_PERF_EVENT_OPEN = 321, 298


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    BASE.mkdir(parents=True, exist_ok=True)
    (BASE / "target").write_text("x")
    LINK.symlink_to(BASE / "target")
    with guest_agent(tmp_path_factory.mktemp("kptypes-agent"), POLICY) as agent:
        yield agent


def _syscall(nr: int, *args: object) -> int:
    ret = _libc.syscall(nr, *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    return _syscall(SYS_BPF, ctypes.c_int(cmd), buf, ctypes.c_uint(128))


def _perf_event_open(typ: int, config: int, func: bytes = b"") -> int:
    name = ctypes.create_string_buffer(func) if func else None
    attr = bytearray(112)
    attr[0:4] = typ.to_bytes(4, "little")
    attr[4:8] = (112).to_bytes(4, "little")
    attr[8:16] = config.to_bytes(8, "little")
    attr[40:48] = (1).to_bytes(8, "little")  # disabled
    if name is not None:
        attr[56:64] = ctypes.addressof(name).to_bytes(8, "little")  # kprobe_func
    buf = ctypes.create_string_buffer(bytes(attr), 112)
    return _syscall(
        SYS_PERF_EVENT_OPEN, buf, ctypes.c_int(0), ctypes.c_int(-1), ctypes.c_int(-1), ctypes.c_ulong(8)
    )


def test_every_hook_is_attached_and_the_missing_map_hook_ignored(agent: AgentProcess) -> None:
    out = subprocess.run(["bpftool", "link", "show"], capture_output=True, text=True, check=True).stdout
    if probe_features()["kprobe_multi"]:
        assert out.count("kprobe_multi") == HOOKS, out
    else:
        assert out.count("perf_event") >= HOOKS, out
    assert "is not a traceable kernel function here: ignored" in agent.stderr()


def test_dentry_is_its_path_and_permission_with_both_stacks(agent: AgentProcess) -> None:
    with open(LINK):  # this process: its mappings are still there when the agent symbolizes its stack
        pass
    ev = agent.wait_for(kprobe_of(os.getpid(), "security_inode_follow_link"), timeout=60)
    b = body(ev)
    # a dentry knows no mount: its path runs up to its file system's root (here /tmp is on /)
    mount = LINK.parent
    while not os.path.ismount(mount):
        mount = mount.parent
    assert b["args"] == [
        {"path_arg": {"path": "/" + str(LINK.relative_to(mount)), "permission": "lrwxrwxrwx"}}
    ]
    assert b["policy_name"] == "vm-kprobe-types"
    keys = list(b)
    assert keys.index("action") < keys.index("kernel_stack_trace") < keys.index("policy_name")
    assert keys[-1] == "user_stack_trace"
    kernel = b["kernel_stack_trace"]
    assert all(set(f) <= {"offset", "symbol"} and f["symbol"] for f in kernel), kernel
    assert "do_filp_open" in [f["symbol"] for f in kernel], kernel  # the open that followed the link
    libc = next(
        line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "/libc.so" in line
    )
    first = b["user_stack_trace"][0]  # the syscall instruction in libc's open
    assert first["module"] == libc and "open" in first["symbol"], b["user_stack_trace"]


def test_user_namespace_and_capability_of_cap_capable(agent: AgentProcess) -> None:
    code = "import time; time.clock_settime(time.CLOCK_REALTIME, time.clock_gettime(time.CLOCK_REALTIME))"
    child = subprocess.Popen([sys.executable, "-c", code])
    assert child.wait() == 0
    ev = agent.wait_for(kprobe_of(child.pid, "cap_capable"), timeout=60)
    init_ns = os.stat("/proc/self/ns/user").st_ino
    assert body(ev)["args"] == [
        {"user_ns_arg": {"level": 0, "uid": 0, "gid": 0, "ns": {"inum": init_ns, "is_host": True}}},
        {"capability_arg": {"value": CAP_SYS_TIME, "name": "CAP_SYS_TIME"}},
    ]


def test_kiocb_and_iov_iter_of_a_tty_write(agent: AgentProcess) -> None:
    master, slave = os.openpty()
    try:
        data = f"{BASE.name} on a pty".encode()
        os.write(slave, data)
        pts = os.ttyname(slave)
        mode = os.stat(pts).st_mode
    finally:
        os.close(slave)
        os.close(master)
    ev = agent.wait_for(kprobe_of(os.getpid(), "tty_write"), timeout=60)
    assert body(ev)["args"] == [
        {"file_arg": {"path": pts, "permission": file_permission(mode)}},
        {"bytes_arg": base64.b64encode(data).decode()},
    ]


def test_bpf_attr_bpf_map_and_perf_event(agent: AgentProcess) -> None:
    insns = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])  # r0 = 0; exit
    insns_buf, license = ctypes.create_string_buffer(insns, 16), ctypes.create_string_buffer(b"GPL")
    prog = (
        (1).to_bytes(4, "little")  # BPF_PROG_TYPE_SOCKET_FILTER
        + (2).to_bytes(4, "little")
        + ctypes.addressof(insns_buf).to_bytes(8, "little")
        + ctypes.addressof(license).to_bytes(8, "little")
    ).ljust(48, b"\0") + PROG_NAME.encode().ljust(16, b"\0")
    bpf_map = (1, 4, 8, 16, 0, 0, 0)  # BPF_MAP_TYPE_HASH, key, value, entries, flags, inner fd, node
    fds = [_bpf(5, prog)]
    fds.append(_bpf(0, b"".join(v.to_bytes(4, "little") for v in bpf_map) + MAP_NAME.encode()))
    fds.append(_perf_event_open(1, 9))  # PERF_TYPE_SOFTWARE, PERF_COUNT_SW_DUMMY
    kprobe_type = int(Path("/sys/bus/event_source/devices/kprobe/type").read_text())
    fds.append(_perf_event_open(kprobe_type, 0, b"security_file_open"))
    for fd in fds:
        os.close(fd)
    pid = os.getpid()  # which also loaded libbpf's and the feature probe's programs and maps: match names

    def arg0(ev: Event) -> Event:
        return next(iter(body(ev)["args"][0].values()))  # type: ignore[no-any-return]

    def with_arg0(function: str, key: str, value: str) -> Callable[[Event], bool]:
        return kprobe_of(pid, function, lambda e: arg0(e).get(key) == value)

    ev = agent.wait_for(with_arg0("bpf_check", "ProgName", PROG_NAME), timeout=60)
    assert body(ev)["args"] == [
        {"bpf_attr_arg": {"ProgType": "BPF_PROG_TYPE_SOCKET_FILTER", "InsnCnt": 2, "ProgName": PROG_NAME}}
    ]
    map_hook = (
        "security_bpf_map_alloc" if "security_bpf_map_alloc" in _traceable() else "security_bpf_map_create"
    )
    ev = agent.wait_for(with_arg0(map_hook, "MapName", MAP_NAME), timeout=60)
    assert body(ev)["args"] == [
        {
            "bpf_map_arg": {
                "MapType": "BPF_MAP_TYPE_HASH",
                "KeySize": 4,
                "ValueSize": 8,
                "MaxEntries": 16,
                "MapName": MAP_NAME,
            }
        }
    ]
    ev = agent.wait_for(with_arg0("security_perf_event_alloc", "Config", "9"), timeout=60)
    assert body(ev)["args"] == [{"perf_event_arg": {"Type": "PERF_TYPE_SOFTWARE", "Config": "9"}}]
    ev = agent.wait_for(
        with_arg0("security_perf_event_alloc", "KprobeFunc", "security_file_open"), timeout=60
    )
    # a PMU's dynamic type number: Tetragon names it from the fixed perf_type_id table, or by its digits
    assert arg0(ev) == {
        "KprobeFunc": "security_file_open",
        "Type": PERF_TYPE_NAMES.get(kprobe_type, str(kprobe_type)),
    }


def _traceable() -> set[str]:
    text = Path("/sys/kernel/tracing/available_filter_functions").read_text()
    return {line.split(" ", 1)[0] for line in text.splitlines()}
