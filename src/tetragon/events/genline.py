"""Export lines of generic records without building event dicts: the pipeline's fastest path.

Used when the only consumer of an event is the JSON export file with no filter, redaction or field
filter (so the line is all that is needed) and no ancestors are added. For each hook (a RenderPlan)
a HookLines keeps:

- per event shape (action, return action, whether the process, parent and arguments are known), a
  line template made by serializing the plan's own event builder once with placeholders where the
  process, parent, arguments, return value and time go, so the constant parts (keys, key order,
  function and policy names, tags, node name) are exactly what `orjson.dumps` writes for the dict;
- per argument (blob kind, index), a converter writing that argument's JSON directly: the common
  integer and string arguments by formatting, every other kind through its dict converter;
- the JSON of recent argument blocks by their raw bytes (a hook sees the same file, flags and
  descriptors again and again), up to 4096 blocks of at most 1 KiB per hook.

A line is the template's constant pieces joined with the variable ones.
tests/unit/test_generic_fastpath.py checks the result is byte for byte the dict path's line for
every argument kind, hook type and event shape.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from tetragon.abi import events_h as L
from tetragon.events.decode import GENERIC_HEAD_SIZE, GenericHeader, unpack_i32
from tetragon.events.generic_args import int_variant, is_int32, with_label
from tetragon.events.render_plan import RenderPlan, convert_by_layout
from tetragon.policy.hookinfo import ArgInfo

_dumps = orjson.dumps
_F = orjson.Fragment
_NL = orjson.OPT_APPEND_NEWLINE

# line converter(buf, start, end, blob flags) -> JSON of one KprobeArgument
LineConverter = Callable[[bytes, int, int, int], bytes]
# fill(process, parent, args, return, time) -> the line; pieces absent from the shape are ignored
Fill = Callable[[bytes | None, bytes | None, bytes, bytes | None, bytes], bytes]

_MARK = b"\x00\x01"  # never in orjson output: control characters inside strings are escaped
_SLOTS = "PQART"  # process, parent, args, return, time: the order they take in every event type
_RET_SENTINEL = 6_543_217  # a return value whose rendering is found and cut out of the template
_MEMO_ENTRIES = 4096  # argument blocks remembered per hook
_MEMO_MAX_BYTES = 1024  # larger blocks (buffers, long paths) are converted every time


def make_line_converter(
    kind: int, info: ArgInfo, dict_conv: Callable[[bytes, int, int, int], object]
) -> LineConverter:
    """`orjson.dumps(dict_conv(...))`, formatted directly for 32-bit integers and strings."""
    label = info.label
    tail = b"}" if not label else b',"label":' + _dumps(label) + b"}"
    if is_int32(kind, info):

        def int32(buf: bytes, start: int, end: int, flags: int) -> bytes:
            return b'{"int_arg":%d%b' % (unpack_i32(buf, start)[0] if end - start >= 8 else 0, tail)

        return int32
    if kind == L.GEN_KIND_STR:

        def string(buf: bytes, start: int, end: int, flags: int) -> bytes:
            return b'{"string_arg":' + _dumps(buf[start:end].decode("utf-8", "replace")) + tail

        return string

    def other(buf: bytes, start: int, end: int, flags: int) -> bytes:
        return _dumps(dict_conv(buf, start, end, flags))

    return other


class HookLines:
    """The line path of one RenderPlan (see the module docstring); `node_name` is the agent's."""

    __slots__ = ("plan", "node_name", "_fills", "_layout", "_converters", "_ret_info", "_ret_blob", "_memo")

    def __init__(self, plan: RenderPlan, node_name: str) -> None:
        self.plan = plan
        self.node_name = node_name
        self._fills: dict[tuple[int, int, int, bool, bool, bool], Fill | None] = {}
        self._layout: tuple[tuple[int, int, LineConverter, int], ...] = ()
        self._converters: dict[tuple[int, int], LineConverter] = {}
        self._memo: dict[bytes, tuple[int, bytes]] = {}
        hook = plan.hook
        self._ret_info = hook.return_arg if hook.event == "process_kprobe" else None
        # a returned sock is a blob among the arguments: such hooks' events take the dict path
        self._ret_blob = self._ret_info is not None and self._ret_info.type == "sock"

    def line(
        self, buf: bytes, head: GenericHeader, process: bytes | None, parent: bytes | None, time: bytes
    ) -> bytes | None:
        """The export line (newline included) of a record whose header decode_generic_header
        checked, or None when this shape has no template (the caller then takes the dict path).
        Malformed blobs raise the ValueError RenderPlan.args raises."""
        if self._ret_blob:
            return None
        _, _, size, _, _, _, _, _, action, return_action, _, nargs, flags, _, ret = head
        args = self.args(buf, nargs, size) if nargs else b""
        returned = flags & L.GEN_F_RETURN
        key = (
            action,
            return_action if returned else 0,
            returned,
            process is not None,
            parent is not None,
            nargs > 0,
        )
        fills = self._fills
        if key in fills:
            fill = fills[key]
        else:
            fill = fills[key] = self._template(key)
        if fill is None:
            return None
        ret_json = None
        if returned and self._ret_info is not None:
            ret_json = _dumps(with_label(int_variant(ret, self._ret_info.type), self._ret_info))
        return fill(process, parent, args, ret_json, time)

    # -- arguments --------------------------------------------------------------------------------

    def args(self, buf: bytes, nargs: int, size: int) -> bytes:
        """The JSON of the record's arguments, comma-separated, in the order of the hook's args
        (the items of RenderPlan.args(buf, nargs, size), serialized).

        Hooks see the same arguments again and again (the same file opened, the same flags), so
        the JSON of small argument blocks is remembered by their raw bytes, up to _MEMO_ENTRIES
        per hook (then forgotten all at once)."""
        if size - GENERIC_HEAD_SIZE > _MEMO_MAX_BYTES:
            return self._convert(buf, nargs, size)
        raw = buf[GENERIC_HEAD_SIZE:size]
        memo = self._memo
        hit = memo.get(raw)
        if hit is not None and hit[0] == nargs:
            return hit[1]
        text = self._convert(buf, nargs, size)
        if len(memo) >= _MEMO_ENTRIES:
            memo.clear()
        memo[raw] = (nargs, text)
        return text

    def _convert(self, buf: bytes, nargs: int, size: int) -> bytes:
        out = convert_by_layout(self._layout, buf, nargs, size)
        return b",".join(out) if out is not None else self._learn(buf, nargs, size)

    def _learn(self, buf: bytes, nargs: int, size: int) -> bytes:
        """The plan's general path (validating every blob), then its layout with line converters."""
        plan = self.plan
        items = plan.args_learning(buf, nargs, size)
        layout = []
        for kind, index, dict_conv, place in plan.layout:
            conv = self._converters.get((kind, index))
            if conv is None:
                conv = self._converters[(kind, index)] = make_line_converter(
                    kind, plan.arg_info(index), dict_conv
                )
            layout.append((kind, index, conv, place))
        self._layout = tuple(layout)
        return b",".join(_dumps(item) for item in items)

    # -- templates --------------------------------------------------------------------------------

    def _template(self, key: tuple[int, int, int, bool, bool, bool]) -> Fill | None:
        action, return_action, returned, has_process, has_parent, has_args = key
        if self.plan.event == "process_loader":
            return None  # its arguments are fields of their own (path, buildid): the dict path builds it
        ret_info = self._ret_info
        event = self.plan.event_builder(
            [_F(_MARK + b"A")] if has_args else [],  # type: ignore[list-item]
            action,
            return_action,
            returned,
            _RET_SENTINEL,
            _F(_MARK + b"P") if has_process else None,
            _F(_MARK + b"Q") if has_parent else None,
            None,
            self.node_name,
            _F(b'"' + _MARK + b'T"'),  # type: ignore[arg-type]
        )
        text = _dumps(event, option=_NL)
        if returned and ret_info is not None:
            ret_text = _dumps(with_label(int_variant(_RET_SENTINEL, ret_info.type), ret_info))
            if text.count(ret_text) != 1:
                return None
            text = text.replace(ret_text, _MARK + b"R")
        pieces = text.split(_MARK)
        slots = "".join(chr(p[0]) for p in pieces[1:])
        if sorted(slots, key=_SLOTS.index) != list(slots) or len(set(slots)) != len(slots):
            return None
        return _filler([pieces[0], *(p[1:] for p in pieces[1:])], slots)


def _filler(pieces: list[bytes], slots: str) -> Fill:
    """fill(P, Q, A, R, T) = the constant pieces with the slots present between them, joined."""
    namespace: dict[str, object] = {"join": b"".join}
    parts = ["c0"]
    namespace["c0"] = pieces[0]
    for k, (slot, piece) in enumerate(zip(slots, pieces[1:], strict=True), 1):
        namespace[f"c{k}"] = piece
        parts += [slot, f"c{k}"]
    exec(f"def fill(P, Q, A, R, T):\n    return join(({', '.join(parts)}))\n", namespace)  # noqa: S102
    fill: Fill = namespace["fill"]  # type: ignore[assignment]
    return fill
