"""Compact output (`tetra getevents -o compact`) against exact expected strings."""

from __future__ import annotations

from typing import Any

from tetragon.events.compact import format_compact, go_quote, quote_if_needed

XWING = {"namespace": "default", "name": "xwing"}


def proc(binary: str, arguments: str = "", **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"exec_id": "eA==", "pid": 1, "binary": binary}
    if arguments:
        p["arguments"] = arguments
    p.update(extra)
    return p


def kprobe(function: str, args: list[dict[str, Any]], **process: Any) -> dict[str, Any]:
    body = {"process": proc("/usr/bin/curl", pod=XWING, **process), "function_name": function, "args": args}
    return {"process_kprobe": body, "node_name": "n1", "time": "2024-04-14T02:18:14.376304204Z"}


def test_doc_lines_verbatim() -> None:
    curl = proc("/usr/bin/curl", "https://ebpf.io/applications/#tetragon", pod=XWING)
    exec_ev = {"process_exec": {"process": curl}, "node_name": "n1"}
    assert (
        format_compact(exec_ev)
        == "🚀 process default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon"
    )
    exit_ev = {"process_exit": {"process": curl, "signal": "SIGKILL"}, "node_name": "n1"}
    assert format_compact(exit_ev) == (
        "💥 exit    default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon SIGKILL"
    )
    sock = {"sock_arg": {"family": "AF_INET", "saddr": "10.32.0.28", "daddr": "104.198.14.52"}}
    sock["sock_arg"].update({"sport": 45200, "dport": 443})
    assert format_compact(kprobe("tcp_connect", [sock])) == (
        "🔌 connect default/xwing /usr/bin/curl tcp 10.32.0.28:45200 -> 104.198.14.52:443"
    )
    vi = {"process": proc("/bin/vi", "/etc/passwd", pod={"namespace": "default", "name": "file-access"})}
    vi.update(
        function_name="security_file_permission",
        args=[{"file_arg": {"path": "/etc/passwd", "permission": "-rw-r--r--"}}, {"int_arg": 4}],
    )
    assert format_compact({"process_kprobe": vi, "node_name": "n"}) == (
        "📚 read    default/file-access /bin/vi /etc/passwd"
    )


def test_host_source_exit_status_and_quoting() -> None:
    p = proc("/usr/bin/my tool", "-c ls")
    ev = {"process_exit": {"process": p}, "node_name": "node-1"}
    assert format_compact(ev) == '💥 exit    node-1 "/usr/bin/my tool" "-c ls" 0'
    ev["process_exit"]["status"] = 2
    assert format_compact(ev) == '💥 exit    node-1 "/usr/bin/my tool" "-c ls" 2'
    evil = {"process_exec": {"process": proc("/tmp/\x1b[31mx")}, "node_name": "h"}
    assert format_compact(evil) == '🚀 process h "/tmp/\\x1b[31mx" '


def test_go_quote() -> None:
    assert go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote("\a\b\f\n\r\t\v") == '"\\a\\b\\f\\n\\r\\t\\v"'
    assert go_quote("\x00\x7f\u0085\u00a0\u2028") == '"\\x00\\x7f\\u0085\\u00a0\\u2028"'
    assert go_quote("é🚀\U000e0001") == '"é🚀\\U000e0001"'
    assert go_quote("a\udcffb") == '"a\\xffb"'  # surrogateescape'd invalid byte
    assert quote_if_needed("/usr/bin/curl") == "/usr/bin/curl"
    assert quote_if_needed("naïve") == "naïve"
    assert quote_if_needed("a b") == '"a b"'
    assert quote_if_needed("") == ""


def test_kprobe_lines() -> None:
    write = [{"file_arg": {"path": "/tmp/f"}}, {"bytes_arg": "aGk="}, {"size_arg": "1024"}]
    assert format_compact(kprobe("__x64_sys_write", write)) == (
        "📝 write   default/xwing /usr/bin/curl /tmp/f 1024 bytes"
    )
    assert format_compact(kprobe("sys_read", [{"int_arg": 3}])) == "📚 read    default/xwing /usr/bin/curl  "
    assert format_compact(kprobe("fd_install", [{"int_arg": 3}, {"file_arg": {"path": "/etc/a b"}}])) == (
        '📬 open    default/xwing /usr/bin/curl "/etc/a b"'
    )
    assert format_compact(kprobe("__arm64_sys_openat", [{"int_arg": -100}, {"string_arg": "/etc/x"}])) == (
        "📬️ openat  default/xwing /usr/bin/curl /etc/x"
    )
    setuid = format_compact(kprobe("sys_setuid", [{"int_arg": 0}]))
    assert setuid == "🔑 setuid  default/xwing /usr/bin/curl 0"
    assert format_compact(kprobe("__x64_sys_setns", [{"int_arg": 3}, {"int_arg": 0x40000000}])) == (
        "🔧 setns   default/xwing /usr/bin/curl net"
    )
    assert format_compact(kprobe("__x64_sys_clock_settime", [])) == (
        "⏰ clock_settime default/xwing /usr/bin/curl"
    )
    assert format_compact(kprobe("tcp_sendmsg", [{"sock_arg": {}}, {"int_arg": 5}])) == (
        "📤 sendmsg default/xwing /usr/bin/curl tcp :0 -> :0 bytes 5"
    )
    mmap = [{"file_arg": {"path": "/lib/x.so"}}, {"uint_arg": 5}]
    assert format_compact(kprobe("security_mmap_file", mmap)) == (
        "📝 mmap-rx default/xwing /usr/bin/curl /lib/x.so"
    )
    truncate = [{"path_arg": {"path": "/var/log/a"}}]
    assert format_compact(kprobe("security_path_truncate", truncate)) == (
        "📝 truncate default/xwing /usr/bin/curl /var/log/a"
    )
    perm = [{"file_arg": {"path": "/x"}}, {"int_arg": 1}]
    assert format_compact(kprobe("security_file_permission", perm)) == (
        "❓ security_file_permission default/xwing /usr/bin/curl /x"
    )
    bpf = [{"bpf_attr_arg": {"ProgType": "BPF_PROG_TYPE_KPROBE", "InsnCnt": 12, "ProgName": "p"}}]
    assert format_compact(kprobe("bpf_check", bpf)) == (
        "🐝 bpf_load default/xwing /usr/bin/curl BPF_PROG_TYPE_KPROBE p instruction count 12"
    )
    bpfmap = [{"bpf_map_arg": {"MapType": "BPF_MAP_TYPE_HASH", "KeySize": 4, "ValueSize": 8}}]
    bpfmap[0]["bpf_map_arg"].update(MaxEntries=16, MapName="m")
    assert format_compact(kprobe("security_bpf_map_create", bpfmap)) == (
        "🗺 bpf_map_create default/xwing /usr/bin/curl "
        "BPF_MAP_TYPE_HASH m key size 4 value size 8 max entries 16"
    )
    assert format_compact(kprobe("commit_creds", [])) == "❓ syscall default/xwing /usr/bin/curl commit_creds"


def test_other_event_kinds() -> None:
    host = proc("/bin/sh")
    tp = {"process": host, "subsys": "sched", "event": "sched_switch"}
    tp_line = format_compact({"process_tracepoint": tp, "node_name": "h"})
    assert tp_line == "⁉️ tracepoint h /bin/sh sched sched_switch"
    up = {"process": host, "path": "/bin/bash", "symbol": "readline"}
    up_line = format_compact({"process_uprobe": up, "node_name": "h"})
    assert up_line == "🕵️ uprobe  h /bin/sh /bin/bash readline"
    usdt = {"process": host, "path": "/usr/lib/libc.so.6", "provider": "libc", "name": "setjmp"}
    assert format_compact({"process_usdt": usdt, "node_name": "h"}) == (
        "🕵️ usdt    h /bin/sh /usr/lib/libc.so.6 libc setjmp"
    )
    lsm = {"process": host, "function_name": "file_open"}
    assert format_compact({"process_lsm": lsm, "node_name": "h"}) == "🔒 LSM     h /bin/sh file_open"
    loader = {"process": host, "path": "/lib/libc.so", "buildid": "3q2+7w=="}
    assert format_compact({"process_loader": loader, "node_name": "h"}) == (
        "🧬 loader  h /bin/sh deadbeef /lib/libc.so"
    )
    throttle = {"process_throttle": {"type": "THROTTLE_STOP", "cgroup": "/kubepods/x"}, "node_name": "h"}
    assert format_compact(throttle) == "🧬 throttle STOP  /kubepods/x"
    assert format_compact({"test": {}, "node_name": "h"}) == "TEST EVENT"
    assert format_compact({"rate_limit_info": {}, "node_name": "h"}) is None
    assert format_compact({"process_exec": {}, "node_name": "h"}) is None


def test_timestamps() -> None:
    ev = {"process_exec": {"process": proc("/bin/true")}, "node_name": "h", "time": "2022-10-18T03:16:21.3Z"}
    assert format_compact(ev, timestamps=True) == "2022-10-18T03:16:21.300000000Z 🚀 process h /bin/true "
    ev["time"] = "2022-10-18T03:16:21Z"
    assert format_compact(ev, timestamps=True).startswith("2022-10-18T03:16:21.000000000Z 🚀")  # type: ignore[union-attr]


def test_colors_and_caps_trailer() -> None:
    ev = {"process_exec": {"process": proc("/bin/ls", "-l", pod=XWING)}, "node_name": "h"}
    line = format_compact(ev, color=True)
    head = "\x1b[34m🚀 process\x1b[0m \x1b[32mdefault/xwing\x1b[0m \x1b[35m/bin/ls\x1b[0m \x1b[36m-l\x1b[0m"
    caps = "\x1b[35m\x1b[0m"  # the empty trailer is colored too, so the line is padded to byte 120
    assert line == head + " " + caps.rjust(120 - len(head.encode()))
    admin = proc("/bin/ls", cap={"effective": ["CAP_CHOWN"] * 22})
    plain = format_compact({"process_exec": {"process": admin}, "node_name": "h"})
    start = "🚀 process h /bin/ls "
    assert plain == start + " " + "🛑 CAP_SYS_ADMIN".rjust(120 - len(start.encode()))
    short = proc("/bin/ls", cap={"effective": ["CAP_SYS_ADMIN"]})
    assert format_compact({"process_exec": {"process": short}, "node_name": "h"}) == "🚀 process h /bin/ls "


def test_stack_traces_and_ima() -> None:
    ev = kprobe("security_bprm_check", [])
    ev["process_kprobe"]["kernel_stack_trace"] = [{"address": "0", "offset": "16", "symbol": "do_sys"}]
    ev["process_kprobe"]["user_stack_trace"] = [{"address": "4096", "offset": "5", "module": "/lib/c.so"}]
    assert format_compact(ev, stack_traces=True) == (
        "❓ syscall default/xwing /usr/bin/curl security_bprm_check\n"
        "Kernel:\n   0x0: do_sys+0x10\nUser:\n   0x1000: (/lib/c.so+0x5)"
    )
    lsm = {"process": proc("/bin/sh"), "function_name": "bprm_check_security", "ima_hash": "sha256:ab"}
    lsm["args"] = [{"linux_binprm_arg": {"path": "/usr/bin/x"}}]
    assert format_compact({"process_lsm": lsm, "node_name": "h"}, ima_hash=True) == (
        "🔒 LSM     h /bin/sh bprm_check_security\n   /usr/bin/x sha256:ab"
    )
