#!/usr/bin/env bash
# Records tests/data/events.json with this project's agent: run as root from anywhere, after `make setup`.
# The agent runs with two of the repository's policies (policies/file-integrity-etc.yaml: syscall kprobes;
# policies/network.yaml: syscall kprobes and the sock/inet_sock_set_state tracepoint); a small workload
# runs from / and only its process tree's events are kept (process_exec, process_exit, process_kprobe,
# process_tracepoint). Nothing on the system changes: /etc/passwd is opened for appending and closed, the
# removal is of a file that does not exist, the sockets are on loopback.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd /  # the recording names no directory of the machine it was made on (this shell is the workload's parent)
work=$(mktemp -d)
trap 'cat "$work/agent.log" >&2; rm -rf "$work"' EXIT

mkdir "$work/tp.d"
: >"$work/agent.log"
cp "$root/policies/file-integrity-etc.yaml" "$root/policies/network.yaml" "$work/tp.d/"
port=$("$root/.venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# no rotation: a busy machine fills the default 10 MB while the workload runs
"$root/.venv/bin/tetragon" --export-filename "$work/events.log" --export-file-max-size-mb 4096 \
	--server-address "127.0.0.1:$port" --health-server-address "" \
	--run-dir "$work/run" --tracing-policy-dir "$work/tp.d" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 300); do
	grep -q ' ready: ' "$work/agent.log" && break
	kill -0 "$agent" || { cat "$work/agent.log"; exit 1; }
	sleep 0.1
done

# the workload reads its script from stdin, so that its command lines stay short
env -i PATH=/usr/bin:/bin /bin/bash -s <<'WORKLOAD' &
/bin/true
/bin/ls / >/dev/null
exec 3>>/etc/passwd
exec 3>&-
/bin/rm -f /etc/tetragon-py-no-such-file
/usr/bin/python3 - <<'NET'
import socket
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
conn, _ = server.accept()
client.close()
conn.close()
server.close()
NET
/bin/sh -c "exit 3"
/bin/sleep 10 &
/bin/sleep 0.5
kill -KILL $!
wait
WORKLOAD
workload=$!
wait "$workload" || true
sleep 2
kill -TERM "$agent"
wait "$agent"

"$root/.venv/bin/python" - "$work/events.log" "$workload" >"$root/tests/data/events.json" <<'PY'
import sys

import orjson

path, root_pid = sys.argv[1], int(sys.argv[2])
lines = open(path, "rb").read().splitlines()
events = [orjson.loads(line) for line in lines]
tree: set[str] = set()  # exec_ids of the workload's processes
for ev in events:
    if "process_exec" in ev:
        p = ev["process_exec"]["process"]
        if p["pid"] == root_pid or p.get("parent_exec_id") in tree:
            tree.add(p["exec_id"])
for line, ev in zip(lines, events):
    body = next(v for k, v in ev.items() if k.startswith("process_"))
    if body["process"]["exec_id"] in tree:
        sys.stdout.buffer.write(line + b"\n")  # the agent's bytes, unchanged
PY
wc -l "$root/tests/data/events.json"
