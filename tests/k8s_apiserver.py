"""A Kubernetes API server double for the tests: recorded documents served over real HTTP on 127.0.0.1.

The official client (and the agent's pod watch) talks to it as to the API server: the node's pod list,
then a watch stream (chunked JSON lines) held open until it times out, streaming what a test pushes
meanwhile; it is stopped for an outage and started again on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from kubernetes import client


class JsonHandler(BaseHTTPRequestHandler):
    """Base of the API server doubles of these tests: HTTP/1.1, quiet, JSON answers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def send_json(self, code: int, obj: dict[str, Any], close: bool = False) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_status(self, code: int, reason: str) -> None:
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason}
        self.send_json(code, status)


def serve_local(handler: type[BaseHTTPRequestHandler], port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def local_api_client(port: int) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = False
    return client.ApiClient(configuration)


def write_kubeconfig(path: Path, port: int) -> Path:
    """A kubeconfig for the double on this port, as a user's would be (token auth)."""
    cluster = {"server": f"http://127.0.0.1:{port}"}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
        "users": [{"name": "test", "user": {"token": "test"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class FakeApiServer:
    """Serves GET /api/v1/pods (list or watch) from recorded documents; records every pod query.
    `push` adds a watch event that open watches stream at once. The TracingPolicy kinds are served
    too (`policies`: plural -> items, empty unless a test fills them; `push(..., plural)`), and the
    Events the agent posts are kept in `posted`, so an agent with --enable-k8s-api runs against it."""

    def __init__(self, port: int = 0) -> None:
        self.pod_list: dict[str, Any] = {}
        self.watch_events: list[str] = []
        self.policies: dict[str, list[dict[str, Any]]] = {
            "tracingpolicies": [],
            "tracingpoliciesnamespaced": [],
        }
        self.policy_watch: dict[str, list[str]] = {plural: [] for plural in self.policies}
        self.posted: list[dict[str, Any]] = []
        self.queries: list[dict[str, list[str]]] = []
        self.closing = threading.Event()
        self.pushed = threading.Condition()
        owner = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                plural = url.path.rsplit("/", 1)[-1]
                if url.path.startswith("/apis/cilium.io/v1alpha1/") and plural in owner.policies:
                    if query.get("watch") == ["true"]:
                        owner.stream_watch(self, query, owner.policy_watch[plural])
                    else:
                        items = {"items": owner.policies[plural], "metadata": {"resourceVersion": "1"}}
                        self.send_json(200, items, close=True)
                    return
                owner.queries.append(query)
                if url.path != "/api/v1/pods":
                    self.send_error(404)
                    return
                if query.get("watch") == ["true"]:
                    owner.stream_watch(self, query, owner.watch_events)
                else:
                    self.send_json(200, owner.pod_list, close=True)

            def do_POST(self) -> None:
                parts = urlsplit(self.path).path.split("/")  # /api/v1/namespaces/NS/events
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if parts[1:4] != ["api", "v1", "namespaces"] or parts[5:] != ["events"]:
                    self.send_error(404)
                    return
                owner.posted.append(body)
                created = {**body, "metadata": {**body["metadata"], "name": f"e{len(owner.posted)}"}}
                self.send_json(201, created)

        self.server = serve_local(Handler, port)
        self.port = self.server.server_address[1]

    def stream_watch(
        self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]], events: list[str]
    ) -> None:
        since = int(query.get("resourceVersion", ["0"])[0] or 0)
        timeout = float(query.get("timeoutSeconds", ["5"])[0])
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        sent = 0
        deadline = time.monotonic() + timeout
        # like the API server: the stream stays open until its timeout (or until we go down), and
        # streams what is pushed meanwhile
        while not self.closing.is_set():
            for line in events[sent:]:
                version = json.loads(line)["object"].get("metadata", {}).get("resourceVersion", "0")
                if int(version or 0) > since or json.loads(line)["type"] == "ERROR":
                    data = (line + "\n").encode()
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    handler.wfile.flush()
            sent = len(events)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self.pushed:
                self.pushed.wait(min(left, 0.1))
        handler.wfile.write(b"0\r\n\r\n")

    def push(self, event: str, obj: dict[str, Any], resource: str = "pods") -> None:
        """A watch event (ADDED, MODIFIED, DELETED) of `resource` (pods or a policy plural) for the
        open watches and later ones."""
        events = self.watch_events if resource == "pods" else self.policy_watch[resource]
        events.append(json.dumps({"type": event, "object": obj}))
        with self.pushed:
            self.pushed.notify_all()

    def stop(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
