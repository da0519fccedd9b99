"""Start-up scan of /proc: processes older than the agent get exec_ids, parents and the `procFS` flag."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tetragon.abi.events_h import NS_NAMES
from tetragon.process.model import ExecInfo

log = logging.getLogger(__name__)

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PF_KTHREAD = 0x00200000  # task flag of kernel threads (/proc/<pid>/stat field 9)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _status_fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def read_process(proc: Path, pid: int) -> ExecInfo | None:
    """One process from /proc, or None when it vanished or is a kernel thread we cannot describe."""
    base = proc / str(pid)
    stat = _read(base / "stat")
    status = _read(base / "status")
    if stat is None or status is None:
        return None
    # comm may contain spaces and parentheses: fields start after the last ')'
    rest = stat[stat.rfind(b")") + 2 :].split()
    ppid = int(rest[1])
    task_flags = int(rest[6])
    starttime = int(rest[19])
    st = _status_fields(status.decode(errors="replace"))
    uids = [int(x) for x in st.get("Uid", "0 0 0 0").split()]
    gids = [int(x) for x in st.get("Gid", "0 0 0 0").split()]
    nspids = st.get("NSpid", str(pid)).split()
    info = ExecInfo(
        ktime=starttime * (1_000_000_000 // _CLK_TCK),
        pid=pid,
        tid=pid,
        ppid=ppid,
        nspid=int(nspids[-1]) if nspids else pid,
        uid=uids[0],
        euid=uids[1],
        suid=uids[2],
        fsuid=uids[3],
        gid=gids[0],
        egid=gids[1],
        sgid=gids[2],
        fsgid=gids[3],
        cap_permitted=int(st.get("CapPrm", "0"), 16),
        cap_effective=int(st.get("CapEff", "0"), 16),
        cap_inheritable=int(st.get("CapInh", "0"), 16),
        flags={"procFS"},
        kthread=bool(task_flags & _PF_KTHREAD),
    )
    loginuid = _read(base / "loginuid")
    if loginuid is not None and loginuid.strip():
        info.auid = int(loginuid)
    cmdline = _read(base / "cmdline") or b""
    argv = cmdline.split(b"\0")
    if argv and argv[-1] == b"":
        argv.pop()
    info.argv = [a.decode(errors="replace") for a in argv]
    try:
        info.binary = os.readlink(base / "exe")
    except OSError:
        # kernel threads have no executable; name them as ps does
        info.binary = f"[{st.get('Name', '')}]" if not cmdline else (info.argv[0] if info.argv else "")
    info.binary = info.binary.removesuffix(" (deleted)")
    # Tetragon's proc reader: `rootcwd` for a cwd of /, `rootcwd errorCWD` when it cannot be read
    try:
        info.cwd = os.readlink(base / "cwd")
    except OSError:
        info.flags.update(("rootcwd", "errorCWD"))
    else:
        if info.cwd == "/":
            info.flags.add("rootcwd")
    ns: list[int] = []
    for name in NS_NAMES:
        try:
            link = os.readlink(base / "ns" / name)
            ns.append(int(link[link.index("[") + 1 : -1]))
        except (OSError, ValueError):
            ns.append(0)
    info.ns = tuple(ns)
    cgroup = _read(base / "cgroup") or b""
    for line in cgroup.decode(errors="replace").splitlines():
        if line.startswith("0::"):
            info.cgroup_name = line[3:].rsplit("/", 1)[-1]
    return info


def scan(proc: str = "/proc") -> list[ExecInfo]:
    """Every thread-group leader in /proc, parents before children."""
    root = Path(proc)
    infos: list[ExecInfo] = []
    for entry in os.scandir(root):
        if not entry.name.isdigit():
            continue
        info = read_process(root, int(entry.name))
        if info is not None:
            infos.append(info)
    infos.sort(key=lambda i: (i.ktime, i.pid))
    return infos
