"""A real `tetragon` agent process for end-to-end tests, and helpers to wait for its events."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson

from tests.conftest import VENV_BIN, require_bpf
from tetragon.api.convert import proto_to_event
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2_grpc

Event = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    def __init__(self, tmp: Path, *extra: str, export: bool = True, server: str | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.export = tmp / "events.log" if export else None
        self.server = server if server is not None else f"127.0.0.1:{free_port()}"
        self.stderr_path = tmp / "agent.stderr"
        args = [str(VENV_BIN / "tetragon"), "--server-address", self.server, "--run-dir", str(tmp / "run")]
        if not any(a.startswith("--tracing-policy-dir") for a in extra):
            args += ["--tracing-policy-dir", str(tmp / "tp.d")]  # never the machine's /etc/tetragon
        if not any(a.startswith("--health-server-address") for a in extra):
            args += ["--health-server-address", ""]  # agents of one run would contend for :6789
        if not any(a.startswith("--export-file-max-size-mb") for a in extra):
            # a busy machine can rotate the default 10 MB twice before a test first reads the file
            args += ["--export-file-max-size-mb", "1024"]
        if self.export is not None:
            args += ["--export-filename", str(self.export)]
        args += list(extra)
        self.args = args
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._stderr, stderr=self._stderr)
        self._handle: Any = None
        self._pending = b""
        self.events: list[Event] = []

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.stderr()}")
            if b" ready: " in self.stderr_path.read_bytes():
                return
            time.sleep(0.05)
        raise RuntimeError(f"agent not ready after {timeout}s:\n{self.stderr()}")

    def tetra(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `tetra --server-address <this agent> ARGS...` (e.g. "tracingpolicy", "add", FILE)."""
        cmd = [str(VENV_BIN / "tetra"), "--server-address", self.server, *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr}{res.stdout}")
        return res

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def read_events(self) -> list[Event]:
        """Events appended to the export file since the last call (whole lines only).

        Reads through an open handle, so a rotation (the file renamed, a new one created) loses
        nothing: the old file is read to its end before the new one is opened.
        """
        assert self.export is not None
        while True:
            if self._handle is None:
                try:
                    self._handle = open(self.export, "rb")  # noqa: SIM115 - kept open across calls
                except FileNotFoundError:
                    return self.events
                self._pending = b""
            self._pending += self._handle.read()
            end = self._pending.rfind(b"\n") + 1
            for line in self._pending[:end].splitlines():
                self.events.append(orjson.loads(line))
            self._pending = self._pending[end:]
            try:
                rotated = os.stat(self.export).st_ino != os.fstat(self._handle.fileno()).st_ino
            except FileNotFoundError:
                rotated = False
            if not rotated:
                return self.events
            self._pending += self._handle.read()  # written between the read and the stat
            end = self._pending.rfind(b"\n") + 1
            for line in self._pending[:end].splitlines():
                self.events.append(orjson.loads(line))
            self._handle.close()
            self._handle = None

    def wait_for(self, pred: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            events = self.read_events()
            for ev in events[seen:]:
                if pred(ev):
                    return ev
            seen = len(events)
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event in {len(events)} events after {timeout}s")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return int(self.proc.returncode)


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def running_agent(tmp_path_factory: Any, name: str, *flags: str) -> Iterator[AgentProcess]:
    """Body of a module-scoped agent fixture: needs BPF, waits until ready, must exit 0."""
    require_bpf()
    agent = AgentProcess(tmp_path_factory.mktemp(name), *flags)
    try:
        agent.wait_ready()
        yield agent
    finally:
        assert agent.stop() == 0, agent.stderr()


def body(ev: Event) -> Event:
    return next(iter(ev.values()))


def kind(ev: Event) -> str:
    return next(iter(ev))


def is_exec_of(pid: int, binary: str | None = None) -> Callable[[Event], bool]:
    def pred(ev: Event) -> bool:
        if kind(ev) != "process_exec":
            return False
        p = body(ev)["process"]
        return bool(p["pid"] == pid and (binary is None or p.get("binary") == binary))

    return pred


def is_exit_of(pid: int, binary: str | None = None) -> Callable[[Event], bool]:
    def pred(ev: Event) -> bool:
        if kind(ev) != "process_exit":
            return False
        p = body(ev)["process"]
        return bool(p["pid"] == pid and (binary is None or p.get("binary") == binary))

    return pred


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Stream:
    """A GetEvents stream collected in a background thread."""

    def __init__(self, address: str, request: Any = None) -> None:
        self.channel = grpc.insecure_channel(address)
        stub = sensors_pb2_grpc.FineGuidanceSensorsStub(self.channel)
        self.call = stub.GetEvents(request or events_pb2.GetEventsRequest())
        self.events: list[Event] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for msg in self.call:
                self.events.append(proto_to_event(msg))
        except grpc.RpcError:
            pass

    def wait_for(self, pred: Any, timeout: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in list(self.events):
                if pred(ev):
                    return ev
            time.sleep(0.05)
        raise AssertionError(f"no matching event among {len(self.events)} streamed")

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()
