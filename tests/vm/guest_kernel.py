"""Everything the qemu guest boots from, prepared once and cached: host tools, a pinned Debian kernel
package per entry of the kernel matrix, and an initramfs holding busybox plus the modules that mount
the host's / over 9p.

Each kernel package is pinned exactly: Debian drops old ABI numbers (-NN, or the point release on
6.12) from the archive. When a pin disappears the error names it and the current candidates
(`apt-cache search`); bump `package` in KERNEL_MATRIX. A package already in the cache keeps working
without the archive.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KernelPin:
    """One kernel of the matrix. The non-cloud flavours are used because they ship 9p (as modules):
    the cloud ones lack it, and virtiofs would need a daemon that cannot enforce read-only."""

    name: str  # the matrix entry, as in test ids and `run_vm.py --kernel`
    package: str  # the exact Debian package, linux-image-<release>-unsigned

    @property
    def release(self) -> str:
        """uname -r of the guest, known without downloading the package."""
        return self.package.removeprefix("linux-image-").removesuffix("-unsigned")


KERNEL_MATRIX = (
    KernelPin("6.1", "linux-image-6.1.0-56-amd64-unsigned"),  # bookworm's own kernel: no fprobe
    KernelPin("6.12", "linux-image-6.12.118+deb12-amd64-unsigned"),  # bookworm-security: fprobe
)
KERNEL_PACKAGE = KERNEL_MATRIX[0].package


def kernel_pin(name_or_package: str) -> KernelPin:
    """The matrix entry named so, or an ad-hoc pin for any other kernel package."""
    for pin in KERNEL_MATRIX:
        if name_or_package in (pin.name, pin.package):
            return pin
    if not name_or_package.startswith("linux-image-"):
        names = ", ".join(pin.name for pin in KERNEL_MATRIX)
        raise ValueError(
            f"{name_or_package!r} is neither a matrix kernel ({names}) nor a linux-image package"
        )
    return KernelPin(name_or_package, name_or_package)


HOST_PACKAGES = ("qemu-system-x86", "qemu-utils", "busybox-static")
CACHE_DIR = Path(os.environ.get("TETRAGON_VM_CACHE", "/var/cache/tetragon-vm"))
BUSYBOX = Path("/bin/busybox")
GUEST_INIT = Path(__file__).resolve().parent / "guest_init.sh"
# what stage 1 needs to mount the host's / (9p over virtio-pci) with a tmpfs overlay on top
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")


class VmUnavailable(Exception):
    """The VM cannot be set up or started on this host (as opposed to a guest command failing)."""


@dataclass(frozen=True)
class GuestKernel:
    package: str
    release: str  # uname -r of the guest
    vmlinuz: Path
    config: Path
    initramfs: Path


def ensure_host_tools() -> None:
    """Install qemu and a static busybox through apt when they are missing."""
    missing = [pkg for pkg in HOST_PACKAGES if not _dpkg_installed(pkg)]
    if not missing and shutil.which("qemu-system-x86_64"):
        return
    if os.geteuid() != 0:
        raise VmUnavailable(f"{', '.join(missing)} missing and not root to apt-get install them")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if _apt(install) != 0 and (_apt(["apt-get", "update", "-q"]) != 0 or _apt(install) != 0):
        raise VmUnavailable(f"apt-get install {' '.join(missing)} failed")
    if not shutil.which("qemu-system-x86_64"):
        raise VmUnavailable("qemu-system-x86_64 is not on PATH after installing qemu-system-x86")


def prepare_kernel(package: str = KERNEL_PACKAGE, cache: Path = CACHE_DIR) -> GuestKernel:
    """Download and unpack `package` (once), and build the initramfs (once per init script)."""
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        kdir = cache / package
        if not (kdir / "modules" / "order").exists():
            _unpack_kernel(_download(package, cache / "debs"), kdir)
        release = (kdir / "release").read_text().strip()
        initramfs = _build_initramfs(kdir)
    return GuestKernel(package, release, kdir / "vmlinuz", kdir / "config", initramfs)


def _dpkg_installed(pkg: str) -> bool:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return shutil.which("qemu-system-x86_64") is not None and BUSYBOX.exists()
    return out.returncode == 0 and out.stdout.endswith(" installed")


def _apt(argv: list[str], cwd: Path | None = None) -> int:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # keep apt's chatter out of the test output unless it fails
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"[vm] {' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}", flush=True)
    return proc.returncode


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One preparation at a time: engineers and CI may start the VM tests concurrently."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _download(package: str, debs: Path) -> Path:
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    if os.geteuid() != 0:
        raise VmUnavailable(f"kernel package {package} not cached in {debs} and not root to fetch it")
    print(f"[vm] downloading {package}", flush=True)
    with tempfile.TemporaryDirectory(prefix="download-", dir=debs) as tmp:
        # apt's sandbox user cannot write to a root-owned cache
        cmd = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package]
        if _apt(cmd, cwd=Path(tmp)) != 0 and _apt(["apt-get", "update", "-q"]) == 0:
            _apt(cmd, cwd=Path(tmp))
        for deb in Path(tmp).glob(f"{package}_*.deb"):
            deb.rename(debs / deb.name)  # only complete downloads reach the cache
            return debs / deb.name
    raise VmUnavailable(missing_package_message(package))


def missing_package_message(package: str) -> str:
    """Why `package` could not be downloaded, and the current packages of its series and flavour
    (from apt's local lists) to bump the pin to."""
    candidate = _apt_candidate(package)
    if candidate is None:
        why = "apt has no candidate for it: the archive dropped it (or apt-get update never ran)"
    else:
        why = f"apt lists version {candidate}, so the download itself failed (network, mirror?)"
    message = f"cannot download the pinned kernel package {package}: {why}."
    match = re.fullmatch(r"linux-image-(\d+\.\d+)[.-].*?-((?:cloud-|rt-)?amd64-unsigned)", package)
    if match is None:
        return message
    series, flavour = match.groups()
    pattern = f"^linux-image-{re.escape(series)}[.-].*-amd64-unsigned$"
    proc = subprocess.run(
        ["apt-cache", "search", "--names-only", pattern], capture_output=True, text=True, check=False
    )
    current = sorted(
        (
            name
            for name in (line.split(" ", 1)[0] for line in proc.stdout.splitlines())
            if re.fullmatch(rf"linux-image-{re.escape(series)}[.-].*?-{re.escape(flavour)}", name)
            and not (flavour == "amd64-unsigned" and re.search(r"-(cloud|rt)-amd64-unsigned$", name))
        ),
        key=lambda name: [int(n) for n in re.findall(r"\d+", name)],
    )
    if current:
        message += f" Current {series} packages of this flavour: {', '.join(current[-4:])}."
    return message + (
        f" To bump: set the package of the {series} KernelPin in KERNEL_MATRIX (tests/vm/guest_kernel.py)"
        f" to one that `apt-cache policy` shows a candidate for"
        + (f", e.g. {current[-1]}" if current else "")
        + "."
    )


def _apt_candidate(package: str) -> str | None:
    proc = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, check=False)
    match = re.search(r"^\s*Candidate:\s*(\S+)", proc.stdout, re.MULTILINE)
    return None if match is None or match.group(1) == "(none)" else match.group(1)


def _unpack_kernel(deb: Path, kdir: Path) -> None:
    """Keep only vmlinuz, the config and the initramfs modules (decompressed, in load order)."""
    print(f"[vm] unpacking {deb.name}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tetragon-vm-deb-") as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        root = Path(tmp)
        vmlinuz = sorted(root.glob("boot/vmlinuz-*"))
        if not vmlinuz:
            raise VmUnavailable(f"{deb.name} has no boot/vmlinuz-*")
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        moddir = root / "lib" / "modules" / release
        staging = kdir.with_name(kdir.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "modules").mkdir(parents=True)
        shutil.copyfile(vmlinuz[0], staging / "vmlinuz")
        shutil.copyfile(root / "boot" / f"config-{release}", staging / "config")
        (staging / "release").write_text(release + "\n")
        order = _module_load_order(moddir, INITRAMFS_MODULES)
        for name, path in order:
            (staging / "modules" / f"{name}.ko").write_bytes(_read_module(path))
        (staging / "modules" / "order").write_text("".join(f"{name}\n" for name, _ in order))
        shutil.rmtree(kdir, ignore_errors=True)
        staging.rename(kdir)


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        raise VmUnavailable(f"{path.name}: zstd-compressed modules are not supported; pick another kernel")
    return data


def _module_name(path: Path) -> str:
    base = path.name.split(".ko")[0]
    return base.replace("-", "_")


def _module_load_order(moddir: Path, wanted: tuple[str, ...]) -> list[tuple[str, Path]]:
    """`wanted` and everything they depend on, dependencies first; built-in modules are left out."""
    index = {_module_name(p): p for p in (moddir / "kernel").rglob("*.ko*")}
    builtin_file = moddir / "modules.builtin"
    builtin = (
        {_module_name(Path(line)) for line in builtin_file.read_text().split()}
        if builtin_file.exists()
        else set()
    )
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        path = index.get(name)
        if path is None:
            raise VmUnavailable(f"kernel has neither a module nor a built-in {name}")
        for dep in _modinfo(_read_module(path)).get("depends", "").split(","):
            if dep:
                visit(dep.replace("-", "_"))
        order.append((name, path))

    for name in wanted:
        visit(name)
    return order


def _modinfo(elf: bytes) -> dict[str, str]:
    """The key=value strings of a module's .modinfo section (what `modinfo` prints)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise VmUnavailable("not a 64-bit ELF kernel module")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _typ, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    for i in range(shnum):
        name_off, offset, size = section(i)
        end = elf.index(b"\0", str_off + name_off)
        if elf[str_off + name_off : end] == b".modinfo":
            pairs = (item.split(b"=", 1) for item in elf[offset : offset + size].split(b"\0") if b"=" in item)
            return {k.decode(): v.decode(errors="replace") for k, v in pairs}
    return {}


def _is_static(path: Path) -> bool:
    """No PT_INTERP program header: the binary runs without a dynamic loader in the initramfs."""
    elf = path.read_bytes()
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return all(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def _build_initramfs(kdir: Path) -> Path:
    if not BUSYBOX.exists() or not _is_static(BUSYBOX):
        raise VmUnavailable(f"{BUSYBOX} is missing or not static (apt-get install busybox-static)")
    init = GUEST_INIT.read_bytes()
    busybox = BUSYBOX.read_bytes()
    order = (kdir / "modules" / "order").read_text().split()
    modules = {name: (kdir / "modules" / f"{name}.ko").read_bytes() for name in order}
    digest = hashlib.sha256(init + busybox + "\n".join(order).encode()).hexdigest()[:16]
    target = kdir / f"initramfs-{digest}.cpio.gz"
    if target.exists():
        return target
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "lower", "ovl", "newroot", "mods"):
        cpio.directory(d)
    cpio.char_device("dev/console", 5, 1)  # so that init has a stdout before devtmpfs is mounted
    cpio.file("init", init, 0o755)
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.file("mods/order", "\n".join(order).encode() + b"\n", 0o644)
    for name, data in modules.items():
        cpio.file(f"mods/{name}.ko", data, 0o644)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(cpio.finish(), compresslevel=1))
    tmp.rename(target)
    for stale in kdir.glob("initramfs-*.cpio.gz"):
        if stale != target:
            stale.unlink()
    return target


class _Cpio:
    """The kernel's initramfs format: cpio "newc" (ASCII hex headers, 4-byte alignment)."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        raw = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        self._ino += 1
        self._out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        self._pad()
        self._out += data
        self._pad()

    def _pad(self) -> None:
        self._out += b"\0" * (-len(self._out) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, perm: int) -> None:
        self._entry(name, 0o100000 | perm, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self._out)
