"""Can a kernel function be attached here? Checked before load, so that a kprobe on a function the
kernel cannot trace (dev_queue_xmit, an inline wrapper since 5.19; kfree_skb_reason on 6.12) is
refused with one line naming the function and why, instead of libbpf's attach error.

Both kprobe.multi (fprobe) and a BPF kprobe (a kprobe trace event) attach only where ftrace can trace:
the function must be in tracefs `available_filter_functions`. A kprobe event refuses a notrace
function with EINVAL unless the kernel has CONFIG_KPROBE_EVENTS_ON_NOTRACE (Debian's 6.1 does not:
its out-of-line copy of the inline dev_queue_xmit is such a function). /proc/kallsyms tells the two
reasons apart: no function of that name (inlined everywhere, or not built), or a notrace one. fmod_ret
(Override) attaches through a BPF trampoline: the function must be in the kernel's BTF. What cannot be
read (no tracefs) is not held against the function: the attach then decides.
"""

from __future__ import annotations

import re
from pathlib import Path

from tetragon.policy.compile.plan import Attach, unsupported
from tetragon.policy.compile.resolve import BtfSource

KALLSYMS = Path("/proc/kallsyms")


class TraceableFunctions:
    """One policy's view of the traceable kernel functions, each file read at most once."""

    def __init__(self, tracefs: Path, kallsyms: Path | None = None) -> None:
        self.tracefs, self.kallsyms = tracefs, kallsyms or KALLSYMS
        self._ftrace: frozenset[str] | None = None
        self._symbols: str | None = None

    def _ftrace_names(self) -> frozenset[str] | None:
        if self._ftrace is None:
            try:
                text = (self.tracefs / "available_filter_functions").read_text()
            except OSError:
                return None
            # "name [module]" lines
            self._ftrace = frozenset(line.split(" ", 1)[0] for line in text.splitlines() if line)
        return self._ftrace

    def _has_symbol(self, name: str) -> bool | None:
        """Is `name` a text symbol (t, T) in kallsyms? None when it cannot be read. The file is searched,
        not split: it has ~200k lines, which the emulated guests take seconds to make a set of."""
        if self._symbols is None:
            try:
                self._symbols = self.kallsyms.read_text()
            except OSError:
                return None
        # "address type name [module]"
        return re.search(rf"^\S+ [tT] {re.escape(name)}(?:\s|$)", self._symbols, re.MULTILINE) is not None

    def why_not(self, name: str) -> str:
        """Why kernel function `name` cannot be attached by a kprobe or kprobe.multi; "" when it can (or
        this cannot be told)."""
        ftrace = self._ftrace_names()
        if ftrace is None or name in ftrace:
            return ""
        if self._has_symbol(name) is False:
            return (
                "it is not a function of this kernel (in neither /proc/kallsyms nor "
                "available_filter_functions: inlined into its callers, or not built in)"
            )
        return (
            "it is not in available_filter_functions (notrace: an inline function's out-of-line copy, or "
            "marked notrace), and kprobes attach only where ftrace can (a kprobe event refuses notrace "
            "functions without CONFIG_KPROBE_EVENTS_ON_NOTRACE)"
        )


def refuse_untraceable(
    traceable: TraceableFunctions, btf: BtfSource, attach: list[Attach], where: str
) -> None:
    """PolicyError naming the first function of `attach` this kernel cannot attach, and why."""
    for att in attach:
        names = att.target if att.kind == "kprobe_multi" else att.target[:1]
        for name in names:
            if att.kind in ("kprobe", "kprobe_multi"):
                why = traceable.why_not(name)
            elif att.kind == "fmod_ret" and not btf.get(where).find_func(name):
                why = "it is not in the kernel's BTF, which fmod_ret (Override) attaches through"
            else:
                why = ""
            if why:
                raise unsupported(f"{where}: kernel function {name} cannot be attached on this kernel: {why}")
