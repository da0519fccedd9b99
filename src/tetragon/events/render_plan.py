"""RenderPlan: what the pipeline decides once per policy hook to render its records quickly.

A plan holds the hook's event builder (events.generic_event), one argument converter per (blob
kind, index) (events.generic_args) and the blob layout of the last record seen, so that a record
shaped like the previous one is converted without re-validating it field by field. The line path
(events.genline.HookLines) is made from a plan, on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tetragon.abi.events_h import GEN_RET_INDEX
from tetragon.events.decode import GEN_ARG_SIZE, GENERIC_HEAD_SIZE, generic_blobs, unpack_gen_arg
from tetragon.events.generic_args import Converter, make_converter
from tetragon.events.generic_event import make_event_builder
from tetragon.events.lsm_event import make_lsm_builder
from tetragon.jsontypes import Event
from tetragon.policy.hookinfo import ArgInfo, HookInfo

# per blob of a record layout: (kind, index, converter, position in index order)
Layout = tuple[tuple[int, int, Callable[[bytes, int, int, int], Any], int], ...]


def hook_label(hook: HookInfo) -> str:
    """The `hook` label of tetragon_policy_events_total, e.g. kprobe:security_file_open."""
    if hook.event == "process_kprobe":
        return f"kprobe:{hook.function_name}"
    if hook.event == "process_tracepoint":
        return f"tracepoint:{hook.subsys}:{hook.tp_event}"
    if hook.event == "process_loader":
        return "loader"
    if hook.event == "process_usdt":
        return f"usdt:{hook.provider}/{hook.probe_name}"
    if hook.event == "process_lsm":
        return f"lsm:{hook.function_name}"
    return f"uprobe:{hook.path}:{hook.symbol}"


class RenderPlan:
    """Per hook: the event builder, argument converters per (blob kind, index), the last blob
    layout, and the labels the pipeline counts its events under (tetragon_policy_events_total,
    --enable-ancestors kind)."""

    __slots__ = (
        "hook",
        "event",
        "policy_hook",
        "ancestors_kind",
        "event_builder",
        "lines",
        "_converters",
        "_layout",
    )

    def __init__(self, hook: HookInfo) -> None:
        self.hook = hook
        self.event = hook.event
        self.policy_hook = (hook.policy_name, hook_label(hook))
        self.ancestors_kind = hook.event.removeprefix("process_")
        self.event_builder = (
            make_lsm_builder(hook) if hook.event == "process_lsm" else make_event_builder(hook)
        )
        self.lines: Any = None  # events.genline.HookLines, made by the pipeline on first use
        self._converters: dict[tuple[int, int], Converter] = {}
        self._layout: Layout = ()

    def args(self, buf: bytes, nargs: int, size: int) -> list[Event]:
        """The record's blobs as KprobeArguments in the order of the hook's args, for a record whose
        header decode_generic_header checked; ValueError for blobs that are malformed or overrun
        `size`.

        Records of one hook nearly always carry the same blobs in the same order (not necessarily
        the index order: the kernel may write the arguments its selectors compare first), so the
        last layout seen — per blob its kind, index, converter and place in the index order — is
        kept and checked blob by blob; any other record takes the general path and is learnt."""
        out = convert_by_layout(self._layout, buf, nargs, size)
        return out if out is not None else self.args_learning(buf, nargs, size)

    def args_learning(self, buf: bytes, nargs: int, size: int) -> list[Event]:
        """Validate every blob, convert them in index order and remember this record's layout."""
        blobs = generic_blobs(buf, nargs, size)
        # stable, like sorting the blobs by index
        order = sorted(range(nargs), key=lambda k: blobs[k][2])
        places = [0] * nargs
        for place, k in enumerate(order):
            places[k] = place
        self._layout = tuple(
            (kind, index, self._converter(kind, index), places[k])
            for k, (kind, _, index, _, _) in enumerate(blobs)
        )
        out = []
        for k in order:
            kind, aflags, index, start, end = blobs[k]
            out.append(self._converter(kind, index)(buf, start, end, aflags))
        return out

    @property
    def layout(self) -> Layout:
        """The blob layout of the last record args_learning saw."""
        return self._layout

    def arg_info(self, index: int) -> ArgInfo:
        """The hook's argument at `index`; a blob of an index the hook does not have is untyped."""
        args = self.hook.args
        if index == GEN_RET_INDEX and self.hook.return_arg is not None:
            return self.hook.return_arg  # a returned sock's blob
        return args[index] if index < len(args) else ArgInfo(type="")

    def _converter(self, kind: int, index: int) -> Converter:
        conv = self._converters.get((kind, index))
        if conv is None:
            conv = self._converters[(kind, index)] = make_converter(kind, self.arg_info(index), index)
        return conv


def convert_by_layout(layout: Layout, buf: bytes, nargs: int, size: int) -> list[Any] | None:
    """The record's blobs converted into their places when they are exactly `layout` (kinds,
    indexes, in order, within `size`); None otherwise, for the caller's validating path."""
    if len(layout) != nargs:
        return None
    out: list[Any] = [None] * nargs
    pos = GENERIC_HEAD_SIZE
    for want_kind, want_index, conv, place in layout:
        if pos + GEN_ARG_SIZE > size:
            return None
        kind, aflags, index, length = unpack_gen_arg(buf, pos)
        if kind != want_kind or index != want_index:
            return None
        pos += GEN_ARG_SIZE
        end = pos + length
        if end > size:
            return None
        out[place] = conv(buf, pos, end, aflags)
        pos = end
    return out
