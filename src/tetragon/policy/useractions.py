"""User-space actions of a matched selector: GetUrl (HTTP GET) and DnsLookup (resolve a name).

Tetragon runs both from the agent, not the kernel: they notify an external service (a canary URL,
a DNS name whose lookups are watched) that the selector matched. Failures are logged, never raised.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from typing import Any

log = logging.getLogger(__name__)
TIMEOUT = 5.0


def run_action(action: Any) -> None:
    try:
        if action.action == "GetUrl" and action.arg_url:
            with urllib.request.urlopen(action.arg_url, timeout=TIMEOUT) as resp:  # noqa: S310 (policy-given URL)
                resp.read(1024)
        elif action.action == "DnsLookup" and action.arg_fqdn:
            socket.getaddrinfo(action.arg_fqdn, None)
    except Exception as exc:  # a notification that fails must not disturb the agent
        log.warning("%s %s failed: %s", action.action, action.arg_url or action.arg_fqdn, exc)
