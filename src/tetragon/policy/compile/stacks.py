"""Post's kernelStackTrace / userStackTrace: the STACK_* bits of a Post action, and the hooks that
cannot carry them (bpf/include/generic/stacks.h appends the stacks after the entry's argument blobs)."""

from __future__ import annotations

from typing import Any

from tetragon.abi import generic_cfg_h as G
from tetragon.policy.errors import PolicyError
from tetragon.policy.schema import ActionSelector


def stack_bits(action: ActionSelector) -> int:
    return (G.STACK_KERNEL if action.kernel_stack_trace else 0) | (
        G.STACK_USER if action.user_stack_trace else 0
    )


def check_stack_traces(hook: Any, event: str, where: str) -> None:
    """Refuse stack traces where the event has no field for them (only process_kprobe has), in
    matchReturnActions (the stacks are taken at entry), or next to a returnCopy argument or a
    returned sock (whose blobs the return appends after them)."""
    wants = [a for sel in hook.selectors for a in sel.match_actions if stack_bits(a)]
    at_return = [a for sel in hook.selectors for a in sel.match_return_actions if stack_bits(a)]
    if at_return:
        raise PolicyError(f"{where}: stack traces are taken at entry: ask for them in matchActions")
    if not wants:
        return
    if event != "process_kprobe":
        raise PolicyError(
            f"{where}: kernelStackTrace/userStackTrace: {event} events have no stack-trace fields "
            "(only kprobes' process_kprobe has)"
        )
    if any(arg.return_copy for arg in hook.args):
        raise PolicyError(f"{where}: stack traces cannot be combined with a returnCopy argument")
    return_arg = getattr(hook, "return_arg", None)
    if return_arg is not None and return_arg.type == "sock":
        # the returned sock's blob is appended at return, after the stacks, and would be read as one
        raise PolicyError(f"{where}: stack traces cannot be combined with a returnArg of type sock")
