"""Readers of the network argument types: `sockaddr` (user memory for syscalls and uprobes, kernel
memory for kernel functions) and the kernel-only `skb`, `socket` and `net_device` (bpf/include/generic/
readers_net.h). `sock` stays with the other types (args.py): syscalls read it through an fd.

And socket tracking: TrackSock / UntrackSock actions and returnArgAction on a returned sock."""

from __future__ import annotations

from tetragon.abi import events_h as E
from tetragon.abi import generic_cfg_h as G
from tetragon.policy.compile.plan import unsupported
from tetragon.policy.errors import PolicyError

# argument type -> its reader on a kernel function
NET_KERNEL_READERS = {
    "sockaddr": G.RD_KSOCKADDR,
    "skb": G.RD_SKB,
    "socket": G.RD_SOCKET,
    "net_device": G.RD_NETDEV,
}


def net_kernel_reader(arg_type: str, mech: int, user_memory: bool, where: str) -> int:
    """The RD_* reader of a network argument of type `arg_type` on mechanism `mech`."""
    if arg_type == "sockaddr" and user_memory:
        return G.RD_USOCKADDR
    if mech != G.MECH_KPROBE:
        raise unsupported(
            f"{where}: {arg_type} arguments are kernel pointers read on kernel functions (kprobes) only"
        )
    return NET_KERNEL_READERS[arg_type]


# --- socket tracking ---------------------------------------------------------------------------------
SOCK_ACTIONS = (E.ACTION_TRACKSOCK, E.ACTION_UNTRACKSOCK)
RETURN_ARG_ACTIONS = {"TrackSock": E.ACTION_TRACKSOCK, "UntrackSock": E.ACTION_UNTRACKSOCK}


def return_sock(
    ret_type: str, return_arg_action: str | None, mech: int, where: str
) -> tuple[int, int] | None:
    """(ret_reader, ret_action) of a kernel function's returnArg of type `ret_type` with
    `return_arg_action`; None when the return value is an integer without a socket action."""
    action = RETURN_ARG_ACTIONS.get(return_arg_action or "", 0)
    if ret_type != "sock":
        if action:
            raise PolicyError(f"{where}.returnArgAction: {return_arg_action} needs a returnArg of type sock")
        return None
    if mech != G.MECH_KPROBE:
        raise unsupported(
            f"{where}.returnArg: a sock return value is read on kernel functions (kprobes) only"
        )
    return G.RD_SOCK, action


def check_sock_actions(cfg: G.HookCfg, where: str) -> None:
    """TrackSock / UntrackSock key on a kernel struct sock *: their argSock must be a sock or socket
    argument read from kernel memory (a syscall's sock is an fd)."""
    for s in range(cfg.nselectors):
        sel = cfg.sel[s]
        for acts, n in ((sel.actions, sel.nactions), (sel.ret_actions, sel.nret_actions)):
            for k in range(n):
                if acts[k].id not in SOCK_ACTIONS:
                    continue
                i = acts[k].arg_sock
                if i >= cfg.nargs or cfg.args[i].reader not in (G.RD_SOCK, G.RD_SOCKET):
                    raise PolicyError(
                        f"{where}.selectors[{s}]: TrackSock/UntrackSock argSock {i} is not a sock or socket "
                        f"argument of a kernel function"
                    )


def sock_action_args(sel: G.Selector) -> int:
    """Bit mask of the arguments selector `sel`'s TrackSock / UntrackSock actions key on: read before
    its actions run."""
    mask = 0
    for k in range(sel.nactions):
        if sel.actions[k].id in SOCK_ACTIONS:
            mask |= 1 << sel.actions[k].arg_sock
    return mask


def tracks_socks(cfg: G.HookCfg) -> bool:
    """Does the hook track or untrack socks (an action or returnArgAction)? A policy none of whose hooks
    does gets a 1-entry tg_socktrack (its hooks only look socks up there)."""
    if cfg.ret_action in SOCK_ACTIONS:
        return True
    return any(
        acts[k].id in SOCK_ACTIONS
        for sel in cfg.sel[: cfg.nselectors]
        for acts, n in ((sel.actions, sel.nactions), (sel.ret_actions, sel.nret_actions))
        for k in range(n)
    )
