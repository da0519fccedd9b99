"""matchActions / matchReturnActions -> struct gen_action, and the actions the agent runs itself.

Action ids are events.h's ACTION_* (tetragon.abi.events_h). An action that needs a kernel feature
this agent does not use is refused with what it would need; in monitor mode enforcement is only
reported, so it compiles. Override depends on the hook's mechanism: hooks.py decides.
"""

from __future__ import annotations

import ctypes
import signal

from tetragon.abi import events_h as E
from tetragon.abi import generic_cfg_h as G
from tetragon.policy.compile.matchargs import MatchCtx
from tetragon.policy.compile.plan import unsupported
from tetragon.policy.compile.stacks import stack_bits
from tetragon.policy.errors import PolicyError
from tetragon.policy.names import USER_SPACE_ACTIONS
from tetragon.policy.schema import ActionSelector, Selector

# Action name -> events.h ACTION_* (`Set` only in usdts: validate.py refuses it elsewhere).
ACTION_IDS: dict[str, int] = {
    "Post": E.ACTION_POST,
    "FollowFD": E.ACTION_FOLLOWFD,
    "Sigkill": E.ACTION_SIGKILL,
    "UnfollowFD": E.ACTION_UNFOLLOWFD,
    "Override": E.ACTION_OVERRIDE,
    "CopyFD": E.ACTION_COPYFD,
    "GetUrl": E.ACTION_GETURL,
    "DnsLookup": E.ACTION_DNSLOOKUP,
    "NoPost": E.ACTION_NOPOST,
    "Signal": E.ACTION_SIGNAL,
    "TrackSock": E.ACTION_TRACKSOCK,
    "UntrackSock": E.ACTION_UNTRACKSOCK,
    "NotifyEnforcer": E.ACTION_NOTIFYENFORCER,
    "CleanupEnforcerNotification": E.ACTION_CLEANUPENFORCER,
    "Set": E.ACTION_SET,
}
ENFORCING = {"Sigkill", "Signal", "NotifyEnforcer", "Override"}
SIGNALLING = {E.ACTION_SIGKILL, E.ACTION_SIGNAL, E.ACTION_NOTIFYENFORCER}  # need bpf_send_signal
RATE_LIMIT_SCOPES = {"thread": G.RL_THREAD, "process": G.RL_PROCESS, "global": G.RL_GLOBAL}


def user_actions(selectors: list[Selector]) -> dict[int, list[ActionSelector]]:
    """Selector index -> its GetUrl / DnsLookup actions (selectors without any are left out)."""
    out = {}
    for k, sel in enumerate(selectors):
        acts = [a for a in sel.match_actions if a.action in USER_SPACE_ACTIONS]
        if acts:
            out[k] = acts
    return out


def fill_actions(
    ctx: MatchCtx, out: ctypes.Array[G.Action], acts: list[ActionSelector], mode: str, plan_warn: list[str]
) -> int:
    if len(acts) > G.GEN_MAX_ACTIONS:
        raise PolicyError(f"{ctx.where}: at most {G.GEN_MAX_ACTIONS} actions per selector")
    for k, a in enumerate(acts):
        name = a.action
        if a.ima_hash:
            raise unsupported(f"{ctx.where}: imaHash needs BPF LSM hooks")
        if name in ("FollowFD", "UnfollowFD", "CopyFD"):
            plan_warn.append(
                f"{ctx.where}: action {name} is deprecated since Tetragon 1.4 and does nothing (fd "
                f"arguments resolve on their own)"
            )
        if name == "NotifyEnforcer":
            if not ctx.policy.spec.enforcers:
                raise PolicyError(f"{ctx.where}: NotifyEnforcer needs a spec.enforcers section")
            if a.arg_error and a.arg_sig != signal.SIGKILL and mode == "enforce":
                raise unsupported(
                    f"{ctx.where}: NotifyEnforcer with argError needs bpf_override_return or fmod_ret to "
                    f"fail "
                    "the call, which this kernel lacks (argSig: 9 works: a killed process never sees the "
                    "error)"
                )
        if name == "Signal" and not a.arg_sig:
            raise PolicyError(f"{ctx.where}: action Signal needs argSig")
        out[k].id = ACTION_IDS[name]
        out[k].arg_error = a.arg_error
        out[k].arg_sig = signal.SIGKILL if name == "Sigkill" else a.arg_sig
        if name == "Set":  # struct gen_action carries Set's argIndex / argValue in arg_sig / arg_error
            out[k].arg_sig, out[k].arg_error = a.arg_index, ctypes.c_int32(a.arg_value).value
        out[k].arg_sock = a.arg_sock
        out[k].rate_limit_ns = a.rate_limit_ns
        out[k].stack = stack_bits(a) if name == "Post" else 0
        out[k].scope = RATE_LIMIT_SCOPES.get(a.rate_limit_scope or "thread", G.RL_THREAD)
    return len(acts)
