"""Process lifecycle end to end: real BPF, a real agent process, real workloads, exact fields.

Every assertion is made twice: on the JSON export file and on a gRPC GetEvents stream opened before
the workload ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, Event, Stream, body, is_exec_of, is_exit_of, running_agent


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(
        tmp_path_factory,
        "agent",
        "--enable-ancestors",
        "base",
        "--enable-process-cred",
        "--enable-process-ns",
    )


@pytest.fixture(scope="module")
def stream(agent: AgentProcess) -> Iterator[Stream]:
    s = Stream(agent.server)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def workload(
    agent: AgentProcess, stream: Stream, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, int | Path]:
    """Runs the workload once; returns the pids it wrote down and its directories."""
    base = tmp_path_factory.mktemp("workload")
    # the stream subscribes asynchronously: wait until it delivers before running the workload
    for _ in range(100):
        probe = subprocess.Popen(["/bin/true"])
        probe.wait()
        try:
            stream.wait_for(is_exec_of(probe.pid), timeout=0.2)
            break
        except AssertionError:
            continue
    else:
        pytest.fail("the gRPC stream never delivered an event")
    work = base / "work dir"
    work.mkdir()
    script = work / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    pids = base / "pids"
    pids.mkdir()
    echo = base / "echo.sh"
    echo.write_text(f"""echo $$ > '{pids}/echo'\nexec /bin/echo "hello world" "it's" 'quote"d'\n""")
    run = base / "run.sh"
    run.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo $$ > '{pids}/shell'
            cd '{work}'
            /bin/sh '{echo}' > /dev/null
            sh -c 'echo $$ > "{pids}/script"; exec ./script.sh one "two three"'
            /bin/sleep 30 &
            echo $! > '{pids}/killed'
            until grep -q '^sleep$' /proc/$!/comm; do :; done  # exec'd, not a fork about to exec
            kill -9 $!
            wait
            sh -c 'echo $$ > "{pids}/three"; exit 3'
            ( sh -c 'echo $PPID > "{pids}/subshell"'; exit 4 )
            '{sys.executable}' -c "$THREADED"
            exit 0
            """
        )
    )
    run.chmod(0o755)
    threaded = (
        "import os, threading\n"
        f"open('{pids}/threaded', 'w').write(str(os.getpid()))\n"
        "threading.Thread(target=lambda: os._exit(5)).start()\n"
        "threading.Event().wait()\n"
    )
    subprocess.run([str(run)], check=True, env={**os.environ, "THREADED": threaded})
    out: dict[str, int | Path] = {name: int((pids / name).read_text()) for name in os.listdir(pids)}
    out["work"] = work
    out["run"] = run
    return out


class Source:
    """Where a test reads events: the export file or the gRPC stream."""

    def __init__(self, agent: AgentProcess, stream: Stream, name: str) -> None:
        self.wait_for = agent.wait_for if name == "file" else stream.wait_for
        self.all = agent.read_events if name == "file" else lambda: list(stream.events)


@pytest.fixture(params=["file", "grpc"])
def events(request: pytest.FixtureRequest, agent: AgentProcess, stream: Stream) -> Source:
    return Source(agent, stream, request.param)


def _exec(events: Source, pid: int, binary: str) -> Event:
    return body(events.wait_for(is_exec_of(pid, binary)))


def test_exec_fields_of_a_binary_with_quoted_arguments(events: Source, workload: dict) -> None:
    ev = _exec(events, workload["echo"], "/bin/echo")
    p = ev["process"]
    assert p["binary"] == "/bin/echo"
    # Tetragon's quoting: a quoted argument brings its leading space, also when it comes first
    assert p["arguments"] == ' "hello world" it\'s quote"d'
    assert p["cwd"] == str(workload["work"])
    assert p["pid"] == workload["echo"]
    assert p["tid"] == workload["echo"]
    assert p["uid"] == os.geteuid()
    assert p["auid"] == int(Path("/proc/self/loginuid").read_text())
    assert p["flags"] == "execve"  # an exec replacing an exec (sh -c ... exec), not the first after fork
    assert p["exec_id"] and p["start_time"].endswith("Z")
    assert p["process_credentials"]["euid"] == os.geteuid()
    assert "CAP_SYS_ADMIN" in p["cap"]["effective"]
    assert p["ns"]["pid"]["inum"] == os.stat("/proc/self/ns/pid").st_ino
    # Tetragon: in_init_tree always there (false outside containers), no refcnt on exec events
    assert p["in_init_tree"] is False and ev["parent"]["in_init_tree"] is False
    assert "refcnt" not in p and "refcnt" not in ev["parent"]


def test_parent_chain_and_procfs(events: Source, workload: dict) -> None:
    shell = _exec(events, workload["shell"], str(workload["run"]))
    sh = shell["process"]
    assert sh["flags"] == "execve clone"
    assert sh["cwd"] == os.getcwd()
    # the test runner started before the agent: known from the /proc scan
    assert shell["parent"]["pid"] == os.getpid()
    assert "procFS" in shell["parent"]["flags"]
    assert sh["parent_exec_id"] == shell["parent"]["exec_id"]
    # `/bin/sh echo.sh` forks from the shell and execs /bin/echo without a fork: Tetragon's parent
    # of echo is the pid's previous image (sh echo.sh), whose parent is the shell
    echo = _exec(events, workload["echo"], "/bin/echo")
    prev = echo["parent"]
    assert prev["pid"] == workload["echo"] and prev["binary"].endswith("/sh")
    assert prev["arguments"].endswith("echo.sh")
    assert echo["process"]["parent_exec_id"] == prev["exec_id"]
    assert prev["parent_exec_id"] == sh["exec_id"]
    echo_exit = body(events.wait_for(is_exit_of(workload["echo"], "/bin/echo")))
    assert echo_exit["parent"]["exec_id"] == prev["exec_id"]
    assert "refcnt" not in echo_exit["process"] and "refcnt" not in echo_exit["parent"]


def test_procfs_startup_events(agent: AgentProcess, workload: dict) -> None:
    """Tetragon emits process_exec at start for `<kernel>` and every process found in /proc
    (in the export file: they precede any gRPC stream)."""
    execs = [e for e in agent.read_events() if "process_exec" in e]
    kernel_ev = next(body(e) for e in execs if body(e)["process"]["binary"] == "<kernel>")
    k = kernel_ev["process"]
    assert k["pid"] == 0 and k["flags"] == "procFS" and k["parent_exec_id"] == k["exec_id"]
    runner = next(body(e) for e in execs if body(e)["process"]["pid"] == os.getpid())
    assert runner["process"]["flags"].startswith("procFS")
    init = next(body(e) for e in execs if body(e)["process"]["pid"] == 1)
    assert init["process"]["parent_exec_id"] == k["exec_id"]
    # kernel threads are cached, not exported
    kthreadd = [e for e in execs if body(e)["process"]["pid"] == 2]
    assert kthreadd == []


def test_ancestors_reach_init(events: Source, workload: dict) -> None:
    echo = _exec(events, workload["echo"], "/bin/echo")
    ancestors = echo["ancestors"]
    # the parent is echo's previous image (sh echo.sh), its parent the shell, then this test runner
    assert ancestors[0]["pid"] == workload["shell"]
    assert ancestors[1]["pid"] == os.getpid()
    assert ancestors[-1]["pid"] == 1
    chain = [echo["parent"], *ancestors]
    for child, parent in zip(chain, chain[1:], strict=False):
        assert child["parent_exec_id"] == parent["exec_id"]


def test_shebang_script(events: Source, workload: dict) -> None:
    ev = _exec(events, workload["script"], str(workload["work"] / "script.sh"))
    # the kernel rewrites argv for #! scripts: interpreter argv[0], then the script as it was named
    assert ev["process"]["arguments"] == './script.sh one "two three"'
    assert ev["process"]["cwd"] == str(workload["work"])


def test_exit_by_sigkill(events: Source, workload: dict) -> None:
    ev = body(events.wait_for(is_exit_of(workload["killed"], "/bin/sleep")))
    assert ev["signal"] == "SIGKILL"
    assert "status" not in ev
    assert ev["process"]["arguments"] == "30"
    assert ev["parent"]["pid"] == workload["shell"]


def test_exit_status(events: Source, workload: dict) -> None:
    ev = body(events.wait_for(is_exit_of(workload["three"])))
    assert ev["status"] == 3
    assert "signal" not in ev
    assert ev["process"]["binary"] == "/usr/bin/sh" or ev["process"]["binary"].endswith("/sh")
    shell_exit = body(events.wait_for(is_exit_of(workload["shell"], str(workload["run"]))))
    assert "status" not in shell_exit and "signal" not in shell_exit


def test_exit_of_a_fork_that_never_exec(events: Source, workload: dict) -> None:
    """A subshell: fork without exec, then exit 4. It is its parent's image; Tetragon flags it
    `execve` (the fork's common flag 0x01) with refcnt 1."""
    ev = body(events.wait_for(is_exit_of(workload["subshell"])))
    assert ev["status"] == 4
    p = ev["process"]
    assert p["binary"] == str(workload["run"]) and p["flags"] == "execve"
    assert p["refcnt"] == 1 and "refcnt" not in ev["parent"]
    assert p["pid"] == workload["subshell"]
    assert ev["parent"]["pid"] == workload["shell"]
    assert p["parent_exec_id"] == ev["parent"]["exec_id"]


def test_exit_of_a_multithreaded_process_is_reported_once(events: Source, workload: dict) -> None:
    """A thread calls exit_group(5) while the main thread waits: one exit, for the whole process."""
    pid = workload["threaded"]
    ev = body(events.wait_for(is_exit_of(pid, sys.executable)))
    assert ev["status"] == 5 and "signal" not in ev
    assert ev["process"]["pid"] == pid
    time.sleep(0.2)
    exits = [e for e in events.all() if is_exit_of(pid)(e)]
    assert len(exits) == 1
