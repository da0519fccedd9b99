"""Which hooks need the policy's tg_socktrack at its ceiling: those that track or untrack socks."""

from __future__ import annotations

from tests.unit.test_kprobe_net import TCP_ACCEPT_LIKE, _compile
from tetragon.policy.compile.args_net import tracks_socks

NO_TRACKING = """
  kprobes:
  - call: security_socket_connect
    syscall: false
    args: [{index: 0, type: socket}]
    selectors:
    - matchActions: [{action: Post}]
"""


def test_tracking_hooks_are_the_sock_action_ones() -> None:
    # sk_alloc: returnArgAction TrackSock; __sk_free: UntrackSock; security_socket_connect: TrackSock
    assert [tracks_socks(h.cfg) for h in _compile(TCP_ACCEPT_LIKE).hooks] == [True, True, True]
    assert [tracks_socks(h.cfg) for h in _compile(NO_TRACKING).hooks] == [False]
