"""argparse value types shared by `tetragon` and `tetra`, with Go's flag semantics."""

from __future__ import annotations

import argparse

from tetragon.timefmt import parse_duration

_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off"}


def go_bool(text: str) -> bool:
    """strconv.ParseBool's spellings (any case), plus yes/no/on/off."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}")


def duration(text: str) -> float:
    """A Go duration in seconds (`30s`, `1m`); 0 allowed."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_duration(text: str) -> float:
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return seconds
