"""What each of Tetragon's 71 example policies does in the guest, per kernel: the one table that
tests/vm/test_examples_matrix.py runs.

A row is either `Loads`: `tetra tracingpolicy add` succeeds, the workload runs, and an exported event of
the workload (its process or a child of it) has every field in `event` (dotted paths into the event
body, list items by position); or `Refused`: the add fails with one line holding every fragment.
`event=None` means no workload on this machine can match the example's selectors (`why` says why):
the policy must load, and the workload must produce no event. A row that differs per kernel is a dict
{kernel series: row}.

Placeholders in argv and expected values: {tmp} (the test's directory), {tw} (the workload helper
compiled from TW_C), {pid} (the workload's pid), {comm} (the test process's comm, the workload's
parent's); `setup` commands run once before the workload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.e2e.test_policy_examples import HELPER_C


@dataclass(frozen=True)
class Loads:
    argv: tuple[str, ...]
    event: dict[str, Any] | None
    kind: str = "process_kprobe"
    setup: tuple[tuple[str, ...], ...] = ()
    returncode: int = 0
    why: str = ""
    firehose: bool = False
    flags: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Refused:
    fragments: tuple[str, ...]


Row = Loads | Refused

# The workload helper: tests/e2e/test_policy_examples.py's (dup, openat, clock_settime, pivot_root,
# setuid, write, raw) and the commands below; one small known set of syscalls per command, results
# on stderr.
TW_EXTRA_C = r"""
#undef main
#include <grp.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    long a = 0, b = 0;
    if (!strcmp(cmd, "open")) {
        a = open(argv[2], O_RDONLY);
    } else if (!strcmp(cmd, "write0")) { /* a write of 0 bytes: the permission check, no data */
        a = open(argv[2], O_WRONLY | O_APPEND);
        b = write(a, "", 0);
    } else if (!strcmp(cmd, "mmap")) {
        a = open(argv[2], O_RDONLY);
        b = (long)mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, a, 0) == -1 ? -1 : 0;
    } else if (!strcmp(cmd, "capdrop")) { /* CAP_SYS_ADMIN out of the effective set, then open */
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct d[2];
        syscall(SYS_capget, &h, d);
        d[0].effective &= ~(1U << CAP_SYS_ADMIN);
        b = syscall(SYS_capset, &h, d);
        a = open(argv[2], O_RDONLY);
    } else if (!strcmp(cmd, "userns")) { /* as nobody, without capabilities: a new user namespace */
        setgroups(0, NULL);
        a = setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534);
        b = unshare(CLONE_NEWUSER);
    } else if (!strcmp(cmd, "socket")) { /* an unregistered family: the kernel requests net-pf-N */
        a = socket(atoi(argv[2]), SOCK_DGRAM, 0);
    } else if (!strcmp(cmd, "bpfprog")) { /* a socket filter named tw_prog: r0 = 0; exit */
        struct bpf_insn insns[2] = {{.code = BPF_ALU64 | BPF_MOV | BPF_K}, {.code = BPF_JMP | BPF_EXIT}};
        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
        attr.insn_cnt = 2;
        attr.insns = (unsigned long)insns;
        attr.license = (unsigned long)"GPL";
        strcpy(attr.prog_name, "tw_prog");
        a = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
    } else if (!strcmp(cmd, "pidns")) { /* the first process of a new pid namespace execs argv[2..] */
        int st = 0;
        if (unshare(CLONE_NEWPID))
            return 2;
        pid_t c = fork();
        if (c == 0) {
            execv(argv[2], argv + 2);
            return 127;
        }
        waitpid(c, &st, 0);
        if (WIFSIGNALED(st))
            kill(getpid(), WTERMSIG(st));
        return WEXITSTATUS(st);
    } else {
        return examples_main(argc, argv);
    }
    dprintf(2, "%ld %ld\n", a, b);
    return 0;
}
"""
TW_C = "#define main examples_main\n" + HELPER_C + TW_EXTRA_C

POST, SIGKILL = "KPROBE_ACTION_POST", "KPROBE_ACTION_SIGKILL"
NOBODY = ("/usr/bin/setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps=-all")
CONNECT = ("/usr/bin/curl", "-s", "--connect-timeout", "3")
# a documentation address (TEST-NET-1) made local on lo: neither loopback nor private
TEST_NET = "192.0.2.1"


# a UDP datagram to 127.0.0.1:PORT (bash's /dev/udp: connect + write in the workload's own process)
def _udp(port: int) -> tuple[str, ...]:
    return ("/usr/bin/bash", "-c", f"echo tetragon > /dev/udp/127.0.0.1/{port}")


# one process listens on 127.0.0.1:PORT, connects to itself and accepts
def _listen_accept(port: int) -> tuple[str, ...]:
    return (
        "/usr/bin/python3",
        "-c",
        "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
        f" s.bind(('127.0.0.1', {port})); s.listen(); c = socket.create_connection(('127.0.0.1', {port}));"
        " a, _ = s.accept(); a.close(); c.close()",
    )


# A UDP datagram to 127.0.0.1:PORT (connect + send) while a cgroup_skb egress program (r0 = 1: pass)
# is attached to the workload's own cgroup through a bpf_link, so that __cgroup_bpf_run_filter_skb
# runs (only while such a program is attached); the link goes with the process.
_CGROUP_SKB_UDP = """
import ctypes, os, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def bpf(cmd, attr):
    fd = libc.syscall(321, cmd, ctypes.create_string_buffer(attr.ljust(128, b"\\0"), 128), 128)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    return fd
insns = ctypes.create_string_buffer(struct.pack("<BBhiBBhi", 0xB7, 0, 0, 1, 0x95, 0, 0, 0), 16)
gpl = ctypes.create_string_buffer(b"GPL")
attr = struct.pack("<IIQQIIQII16sII", 8, 2, ctypes.addressof(insns), ctypes.addressof(gpl), 0, 0, 0, 0, 0,
                   b"tw_egress", 0, 1)  # CGROUP_SKB, expected_attach_type CGROUP_INET_EGRESS
prog = bpf(5, attr)  # BPF_PROG_LOAD
root = next(m.split()[1] for m in open("/proc/self/mounts") if m.split()[2] == "cgroup2")
cg = os.open(root + open("/proc/self/cgroup").read().split("0::", 1)[1].strip(), os.O_RDONLY)
link = bpf(28, struct.pack("<IIII", prog, cg, 1, 0))  # BPF_LINK_CREATE, CGROUP_INET_EGRESS
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", PORT))
s.send(b"tetragon\\n")
"""


def _udp_cgroup_skb(port: int) -> tuple[str, ...]:
    return ("/usr/bin/python3", "-c", _CGROUP_SKB_UDP.replace("PORT", str(port)))


# __cgroup_bpf_run_filter_skb(sk, skb, CGROUP_INET_EGRESS) of _udp_cgroup_skb's datagram (9 bytes of
# payload: a 37-byte IPv4 packet)
_CGROUP_SKB_EVENT = {
    "function_name": "__cgroup_bpf_run_filter_skb",
    "action": "KPROBE_ACTION_POST",
    "args.0.sock_arg.family": "AF_INET",
    "args.0.sock_arg.type": "SOCK_DGRAM",
    "args.0.sock_arg.protocol": "IPPROTO_UDP",
    "args.0.sock_arg.saddr": "127.0.0.1",
    "args.0.sock_arg.daddr": "127.0.0.1",
    "args.0.sock_arg.dport": 9,
    "args.1.skb_arg.len": 37,
    "args.1.skb_arg.saddr": "127.0.0.1",
    "args.1.skb_arg.daddr": "127.0.0.1",
    "args.1.skb_arg.dport": 9,
    "args.1.skb_arg.proto": 17,
    "args.1.skb_arg.protocol": "IPPROTO_UDP",
    "args.1.skb_arg.family": "AF_INET",
    "args.2.int_arg": 1,
}


def _need(*fragments: str) -> Refused:
    return Refused(fragments)


def _fd_install(path: str, action: str = POST) -> dict[str, Any]:
    return {"function_name": "fd_install", "args.1.file_arg.path": path, "action": action}


_OVERRIDE_ON_SYSCALL = _need("action Override in enforce mode", "served by its tracepoint", "monitor mode")

ROWS: dict[str, Row | dict[str, Row]] = {
    "other/file-block-kubectl-exec-access.yaml": _need("expected a single YAML document, got 2"),
    # a read (MAY_READ) of a file under one of its 9 read prefixes (an entry of more than 8 values:
    # its own LPM trie, bpf/include/generic/strmaps.h)
    "quickstart/file_monitoring.yaml": Loads(
        ("/usr/bin/cat", "/etc/profile"),
        {
            "function_name": "security_file_permission",
            "action": POST,
            "args.0.file_arg.path": "/etc/profile",
            "args.1.int_arg": 4,
            "return.int_arg": 0,
        },
    ),
    "quickstart/file_monitoring_enforce.yaml": _need(
        "metadata.namespace: required for a TracingPolicyNamespaced"
    ),
    "quickstart/network_egress_cluster.yaml": _need("'${PODCIDR}' is not an IP address or CIDR"),
    "quickstart/network_egress_cluster_enforce.yaml": _need("metadata.namespace: required"),
    # security_bpf_map_alloc (before 6.9) or security_bpf_map_create is dropped by callNotFound
    "tracingpolicy/bpf.yaml": Loads(
        ("{tw}", "bpfprog"),
        {
            "function_name": "bpf_check",
            "args.0.bpf_attr_arg": {
                "ProgType": "BPF_PROG_TYPE_SOCKET_FILTER",
                "InsnCnt": 2,
                "ProgName": "tw_prog",
            },
        },
    ),
    "tracingpolicy/cves/cve-2023-2640-overlayfs-ubuntu.yaml": _need(
        "(security_inode_copy_up_xattr): action Override", "cannot be combined with return: true"
    ),
    "tracingpolicy/cves/cve-2024-3094-xz-ssh.yaml": Loads(
        ("/usr/sbin/sshd", "mmap", "{tmp}/liblzma.so.5.6.0"),
        {
            "function_name": "security_mmap_file",
            "args.0.file_arg.path": "{tmp}/liblzma.so.5.6.0",
            "args.1.uint_arg": 1,
            "return.int_arg": 0,
        },
        setup=(("/usr/bin/cp", "{tw}", "/usr/sbin/sshd"), ("/usr/bin/cp", "{tw}", "{tmp}/liblzma.so.5.6.0")),
    ),
    "tracingpolicy/datagram-with-selectors.yaml": Loads(_udp_cgroup_skb(9), _CGROUP_SKB_EVENT),
    # its cgroup skb hook is silent without a cgroup_skb program (bash's datagram); its sk_alloc/__sk_free
    # hooks track the workload's socket
    "tracingpolicy/datagram-with-sock-tracking.yaml": Loads(
        _udp(9),
        {
            "function_name": "__sk_free",
            "action": "KPROBE_ACTION_UNTRACKSOCK",
            "args.0.sock_arg.protocol": "IPPROTO_UDP",
            "args.0.sock_arg.daddr": "127.0.0.1",
            "args.0.sock_arg.dport": 9,
        },
    ),
    "tracingpolicy/datagram.yaml": Loads(_udp_cgroup_skb(9), _CGROUP_SKB_EVENT),
    "tracingpolicy/datagram_518.yaml": Loads(
        _udp(9),
        {"function_name": "ip_output", "args.1.skb_arg.daddr": "127.0.0.1", "args.1.skb_arg.dport": 9},
    ),
    # lo's noqueue transmits in the sender's context
    "tracingpolicy/dev_hard_start_xmit.yaml": Loads(
        _udp(9), {"function_name": "dev_hard_start_xmit", "args.0.string_arg": "lo"}
    ),
    # an inline function since Linux 6.0: nothing to attach to, for Tetragon too (6.1 has a notrace
    # out-of-line copy, whose kprobe perf event the kernel refuses with EINVAL; 6.12 has none): the
    # agent refuses it before load, naming the function and why
    "tracingpolicy/dev_queue_xmit.yaml": _need(
        "kernel function dev_queue_xmit cannot be attached on this kernel", "available_filter_functions"
    ),
    "tracingpolicy/dns-only-specified-servers.yaml": Loads(
        _udp(53),
        {
            "function_name": "ip_output",
            "action": SIGKILL,
            "args.0.skb_arg.daddr": "127.0.0.1",
            "args.0.skb_arg.dport": 53,
            "args.0.skb_arg.protocol": "IPPROTO_UDP",
        },
        returncode=-9,
    ),
    # CAP_SYS_ADMIN or CAP_NET_RAW gained or lost since exec, inside a user namespace
    "tracingpolicy/fd_install_cap_changes.yaml": Loads(
        ("/usr/bin/unshare", "-Ur", "{tw}", "capdrop", "{tmp}/f"), _fd_install("{tmp}/f")
    ),
    "tracingpolicy/fd_install_caps.yaml": Loads(
        ("/usr/bin/unshare", "-Ur", "{tw}", "open", "{tmp}/f"), _fd_install("{tmp}/f")
    ),
    "tracingpolicy/fd_install_ns.yaml": Loads(
        ("{tw}", "open", "{tmp}/f"),
        None,
        why="its Mnt values are fixed inode numbers of other namespaces; no mount namespace has them",
    ),
    "tracingpolicy/fd_install_ns_host.yaml": Loads(("{tw}", "open", "{tmp}/f"), _fd_install("{tmp}/f")),
    "tracingpolicy/filename_monitoring.yaml": Loads(
        ("{tw}", "write0", "/etc/passwd"),
        {
            "function_name": "security_file_permission",
            "args.0.file_arg.path": "/etc/passwd",
            "args.1.int_arg": 2,
            "return.int_arg": 0,
        },
    ),
    "tracingpolicy/filename_monitoring_filtered.yaml": Loads(
        ("{tw}", "write0", "/etc/passwd"),
        {
            "function_name": "security_file_permission",
            "args.0.file_arg.path": "/etc/passwd",
            "args.1.int_arg": 2,
            "return.int_arg": 0,
        },
    ),
    "tracingpolicy/hardlink-override.yaml": _OVERRIDE_ON_SYSCALL,
    # AF_AX25 (3) is a module in Debian's kernels: the kernel asks for it in the caller's context
    "tracingpolicy/host-changes/monitor-kernel-modules.yaml": Loads(
        ("{tw}", "socket", "3"),
        {
            "function_name": "security_kernel_module_request",
            "args.0.string_arg": "net-pf-3",
            "return.int_arg": 0,
        },
    ),
    # find_module_sections (its load_info hook) is inlined in Debian's kernels, for Tetragon too
    "tracingpolicy/host-changes/monitor-signed-kernel-modules.yaml": _need("find_module_sections"),
    "tracingpolicy/killer.yaml": Loads(
        ("/usr/bin/bash", "-c", "exec 3>&1; echo survived"),
        {"subsys": "raw_syscalls", "event": "sys_enter", "args.0.syscall_id.id": 33},
        kind="process_tracepoint",
        returncode=-9,
    ),
    "tracingpolicy/kprobe_commit_creds.yaml": Loads(
        ("/usr/bin/setpriv", "--reuid", "4245", "/usr/bin/true"),
        {"function_name": "commit_creds", "args.0.process_credentials_arg.uid": 4245},
    ),
    "tracingpolicy/list-generated-ftrace.yaml": Loads(
        ("/usr/bin/kill", "-l"), {"function_name": "ksys_write", "action": POST}
    ),
    "tracingpolicy/list-syscalls-generated.yaml": Loads(
        ("/usr/bin/kill", "-0", "1"), {"function_name": "__x64_sys_kill", "action": POST}
    ),
    "tracingpolicy/list-syscalls-tracepoint.yaml": Loads(
        ("{tw}", "dup"), {"args.0.size_arg": "32", "event": "sys_enter"}, kind="process_tracepoint"
    ),
    "tracingpolicy/list-syscalls.yaml": Loads(("{tw}", "dup"), {"function_name": "__x64_sys_dup2"}),
    # every mapping with a build id, libc's among them (loader events name no policy)
    "tracingpolicy/loader.yaml": Loads(
        ("/usr/bin/true",),
        {"path": "/usr/lib/x86_64-linux-gnu/libc.so.6", "process.binary": "/usr/bin/true"},
        kind="process_loader",
    ),
    # bash execs its one command in place: the exec is denied with EPERM (-1)
    "tracingpolicy/lsm_bprm_check.yaml": Loads(
        ("/usr/bin/bash", "-c", "{tmp}/contrib/tester-progs/nop"),
        {
            "function_name": "bprm_check_security",
            "action": "KPROBE_ACTION_OVERRIDE",
            "args.0.linux_binprm_arg.path": "{tmp}/contrib/tester-progs/nop",
        },
        kind="process_lsm",
        setup=(
            ("/usr/bin/mkdir", "-p", "{tmp}/contrib/tester-progs"),
            ("/usr/bin/cp", "/usr/bin/true", "{tmp}/contrib/tester-progs/nop"),
        ),
        returncode=126,
    ),
    "tracingpolicy/lsm_file_open.yaml": Loads(
        ("/usr/bin/cat", "/etc/passwd"),
        {"function_name": "file_open", "args.0.file_arg.path": "/etc/passwd", "action": POST},
        kind="process_lsm",
    ),
    # the exec's new mm is owned by the exec'ing task, bash's child: mm.owner.real_parent is bash, and
    # its real_parent this test's process, {comm}
    "tracingpolicy/lsm_track_grandparent.yml": Loads(
        ("/usr/bin/bash", "-c", "/usr/bin/true; exit 0"),
        {"function_name": "bprm_check_security", "args.0.string_arg": "{comm}", "action": POST},
        kind="process_lsm",
    ),
    "tracingpolicy/modules-nohost.yaml": _need(
        "podSelector/containerSelector need Kubernetes pod information and the policy filter",
        "(--enable-policy-filter with --enable-k8s-api or --enable-cri)",
    ),
    # the event's action is the selector's first action, as Tetragon reports it
    "tracingpolicy/open_dnsrequest.yaml": Loads(
        ("{tw}", "open", "/etc/passwd"), _fd_install("/etc/passwd", "KPROBE_ACTION_DNSLOOKUP")
    ),
    "tracingpolicy/open_geturl.yaml": Loads(
        ("{tw}", "open", "/etc/passwd"), _fd_install("/etc/passwd", "KPROBE_ACTION_GETURL")
    ),
    "tracingpolicy/openat_write.yaml": Loads(
        ("{tw}", "openat"),
        {
            "function_name": "__x64_sys_openat",
            "args.0.int_arg": -100,
            "args.1.string_arg": "/etc/passwd",
            "args.2.int_arg": 1025,
            "return.int_arg": 3,
        },
    ),
    # selector 0 posts bash's mkdirs, selector 1 (no filter) overrides every other one with -1 (EPERM)
    "tracingpolicy/override-security.yaml": Loads(
        ("/usr/bin/mkdir", "{tmp}/override-dir"),
        {"function_name": "security_inode_mkdir", "action": "KPROBE_ACTION_OVERRIDE"},
        returncode=1,
    ),
    # a capability check (setuid as root: CAP_SETUID) outside the host's pid namespace
    "tracingpolicy/process-credentials/creds-capability-usage.yaml": Loads(
        ("/usr/bin/unshare", "-pf", "{tw}", "setuid"),
        {
            "function_name": "cap_capable",
            "args.0.user_ns_arg.level": 0,
            "args.0.user_ns_arg.ns.is_host": True,
            "args.1.capability_arg.name": "CAP_SETUID",
            "return.int_arg": 0,
        },
    ),
    "tracingpolicy/process-credentials/process-creds-changed.yaml": Loads(
        ("/usr/bin/unshare", "-pf", "/usr/bin/setpriv", "--reuid", "4246", "/usr/bin/true"),
        {"function_name": "commit_creds", "args.0.process_credentials_arg.uid": 4246},
    ),
    "tracingpolicy/process-credentials/process-creds-installed.yaml": Loads(
        ("/usr/bin/unshare", "-pf", "/usr/bin/setpriv", "--reuid", "4247", "/usr/bin/true"),
        {"function_name": "commit_creds", "args.0.process_credentials_arg.uid": 4247},
    ),
    "tracingpolicy/process-exec/process-exec-elf-begin.yaml": Loads(
        ("{tw}", "none"), {"function_name": "security_bprm_creds_from_file", "args.0.file_arg.path": "{tw}"}
    ),
    "tracingpolicy/raw_syscalls.yaml": Loads(
        ("{tw}", "raw"),
        {"event": "sys_enter", "args.0.syscall_id.id": 231},
        kind="process_tracepoint",
        returncode=7,
        firehose=True,
    ),
    "tracingpolicy/rawtp.yaml": Loads(
        ("{tw}", "none"),
        {"subsys": "sched", "event": "sched_process_exec", "args.0.linux_binprm_arg.path": "{tw}"},
        kind="process_tracepoint",
    ),
    "tracingpolicy/sandbox/linux-namespaces/kill_unprivileged_user_namespace.yaml": Loads(
        (*NOBODY, "/usr/bin/unshare", "-U", "/usr/bin/true"),
        {"function_name": "create_user_ns", "action": SIGKILL, "process.binary": "/usr/bin/unshare"},
        returncode=-9,
    ),
    "tracingpolicy/sandbox/linux-namespaces/kill_unprivileged_user_namespace_in_pid_namespace.yaml": Loads(
        ("{tw}", "pidns", "{tw}", "userns"),
        {
            "function_name": "create_user_ns",
            "action": SIGKILL,
            "process.binary": "{tw}",
        },
        returncode=-9,
    ),
    # curl's TCP connects fail with Override's argError (1)
    "tracingpolicy/security-socket-connect-block-others.yaml": Loads(
        (*CONNECT, "http://127.0.0.1:1/"),
        {
            "function_name": "security_socket_connect",
            "action": "KPROBE_ACTION_OVERRIDE",
            "args.1.sockaddr_arg.addr": "127.0.0.1",
            "args.1.sockaddr_arg.port": 1,
        },
        returncode=7,
    ),
    "tracingpolicy/security-socket-connect.yaml": Loads(
        (*CONNECT, "http://127.0.0.1:1/"),
        {
            "function_name": "security_socket_connect",
            "args.0.sockaddr_arg.family": "AF_INET",
            "args.0.sockaddr_arg.addr": "127.0.0.1",
            "args.0.sockaddr_arg.port": 1,
        },
        returncode=7,
    ),
    "tracingpolicy/security_bprm_check.yaml": Loads(
        ("/usr/bin/sample-exec",),
        {"function_name": "security_bprm_check", "args.0.linux_binprm_arg.path": "/usr/bin/sample-exec"},
        setup=(("/usr/bin/cp", "/usr/bin/true", "/usr/bin/sample-exec"),),
    ),
    # a dentry's path runs up to its file system's root: the guest's / (an overlay), not /tmp's
    "tracingpolicy/security_inode_follow_link.yaml": Loads(
        ("{tw}", "open", "/usr/bin/tw-link"),
        {
            "function_name": "security_inode_follow_link",
            "args.0.path_arg": {"path": "/usr/bin/tw-link", "permission": "lrwxrwxrwx"},
        },
        setup=(("/usr/bin/ln", "-sf", "{tmp}/f", "/usr/bin/tw-link"),),
    ),
    # the datagram's skbs are freed in the sender's context; on 6.12 kfree_skb_reason is an inline
    # wrapper of sk_skb_reason_drop
    "tracingpolicy/stack_traces.yaml": {
        # bash's getaddrinfo first tries nscd's AF_UNIX socket twice: each failed connect frees its unused
        # skb (no data, no headers: an empty skb_arg, reason 1 NOT_SPECIFIED). The datagram is dropped
        # with reason 2 (NO_SOCKET): nothing listens on port 9
        "6.1": Loads(
            _udp(9),
            {
                "function_name": "kfree_skb_reason",
                "args.0.skb_arg.daddr": "127.0.0.1",
                "args.0.skb_arg.dport": 9,
                "args.0.skb_arg.protocol": "IPPROTO_UDP",
                "args.1.int_arg": 2,
                "args.1.label": "reason",
                "kernel_stack_trace.0.symbol": "kfree_skb_reason",
            },
        ),
        "6.12": _need(
            "kernel function kfree_skb_reason cannot be attached on this kernel", "available_filter_functions"
        ),
    },
    "tracingpolicy/symlink-override.yaml": _OVERRIDE_ON_SYSCALL,
    "tracingpolicy/sys_clock_settime.yaml": Loads(
        ("{tw}", "clock_settime"), {"function_name": "__x64_sys_clock_settime", "args.0.int_arg": 1}
    ),
    "tracingpolicy/sys_pivot_root.yaml": Loads(
        ("{tw}", "pivot_root", "{tmp}/new", "{tmp}/old"),
        {
            "function_name": "__x64_sys_pivot_root",
            "args.0.string_arg": "{tmp}/new",
            "args.1.string_arg": "{tmp}/old",
        },
    ),
    "tracingpolicy/sys_setuid.yaml": Loads(
        ("{tw}", "setuid"), {"function_name": "__x64_sys_setuid", "args.0.int_arg": 0}
    ),
    # the accepted sock, tracked from tcp_create_openreq_child, reaches TCP_ESTABLISHED (1)
    "tracingpolicy/tcp-accept.yaml": Loads(
        _listen_accept(31337),
        {"function_name": "tcp_set_state", "args.0.sock_arg.state": "TCP_SYN_RECV", "args.1.int_arg": 1},
    ),
    "tracingpolicy/tcp-connect-only-local-addrs.yaml": Loads(
        (*CONNECT, f"http://{TEST_NET}:1/"),
        {"function_name": "tcp_connect", "action": SIGKILL, "args.0.sock_arg.daddr": TEST_NET},
        returncode=-9,
    ),
    "tracingpolicy/tcp-connect-only-private-addrs.yaml": Loads(
        (*CONNECT, f"http://{TEST_NET}:1/"),
        {"function_name": "tcp_connect", "action": SIGKILL, "args.0.sock_arg.daddr": TEST_NET},
        returncode=-9,
    ),
    "tracingpolicy/tcp-connect-with-selectors.yaml": Loads(
        (*CONNECT, "http://127.0.0.1:1/"),
        {"function_name": "tcp_connect", "args.0.sock_arg.daddr": "127.0.0.1", "args.0.sock_arg.dport": 1},
        returncode=7,
    ),
    "tracingpolicy/tcp-connect.yaml": Loads(
        (*CONNECT, "http://127.0.0.1:1/"),
        {"function_name": "tcp_connect", "args.0.sock_arg.daddr": "127.0.0.1", "args.0.sock_arg.dport": 1},
        returncode=7,
    ),
    "tracingpolicy/tcp-listen.yaml": Loads(
        _listen_accept(1337), {"function_name": "inet_csk_listen_start", "args.0.sock_arg.sport": 1337}
    ),
    "tracingpolicy/tty.yaml": Loads(
        ("/usr/bin/script", "-qec", "echo tetragon-tty", "/dev/null"),
        {"function_name": "tty_write", "args.1.bytes_arg": "dGV0cmFnb24tdHR5Cg=="},  # "tetragon-tty\n"
    ),
    # written for tty_write(file, buf, count) of kernels up to 5.4; Tetragon loads it on any kernel too.
    # A pty's writes go through tty_fops (a console's may call an inlined copy)
    "tracingpolicy/tty_54.yaml": Loads(
        ("/usr/bin/script", "-qec", "echo tetragon-tty", "/dev/null"), {"function_name": "tty_write"}
    ),
    "tracingpolicy/uprobe-binaries.yaml": _need("uprobe path /lib64/libc.so.6 does not exist"),
    "tracingpolicy/uprobe-host.yaml": _need("uprobe path /procRoot/1/root/usr/bin/bash does not exist"),
    "tracingpolicy/uprobe-pid.yaml": Loads(
        ("/usr/bin/bash", "-c", "true"), None, why="its matchPIDs names pid 61697, which the workload is not"
    ),
    "tracingpolicy/uprobe.yaml": Loads(
        ("/usr/bin/bash", "-c", "true"),
        {"symbol": "main", "path": "/bin/bash"},
        kind="process_uprobe",
    ),
    # their binaries are Tetragon's test programs, at a path of their author's machine
    "tracingpolicy/usdt-set.yaml": _need("spec.usdts[0] (", "usdt path /home/", "does not exist"),
    "tracingpolicy/usdt.yaml": _need("spec.usdts[0] (", "usdt path /home/", "does not exist"),
    "tracingpolicy/write.yaml": Loads(
        ("{tw}", "write"), {"function_name": "__x64_sys_write", "args.0.int_arg": 1, "args.2.size_arg": "15"}
    ),
}


def row_for(example: str, kernel: str) -> Row:
    """The row of `example` on kernel series `kernel` ("6.1", "6.12")."""
    row = ROWS[example]
    return row[kernel] if isinstance(row, dict) else row
