"""Tetragon redaction filters (`RedactionFilter` in events.proto, flag `--redaction-filters`).

`redact` is a list of RE2 patterns whose capture groups are replaced by `*****` in process
arguments (and in `KEY=VALUE` environment variables); `binary_regex` optionally restricts a filter
to processes whose binary matches. Filters apply in order, each to the output of the previous one.

Tetragon redacts once, when a process enters the process cache, so every consumer (JSON file and
gRPC) sees redacted arguments; `redact_arguments`/`redact_environment` are the hooks for that.
`compile_redaction` applies the same filters to a finished event (process, parent and ancestors),
copying only what changes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from tetragon.export.filterspec import FilterError, checked_fields, compile_re2, decode_json_objects
from tetragon.jsontypes import Event

REDACTION_STR = "*****"
REDACTION_FILTER_KEYS = ("redact", "binary_regex", "match")


def normalize_redaction_filter(raw: Any, where: str = "redaction filter") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"redact": [], "binary_regex": []}
    for key, at, value in checked_fields(raw, where, REDACTION_FILTER_KEYS):
        if key == "match":
            raise FilterError(f"{at}: is deprecated and not supported; use binary_regex")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FilterError(f"{at}: expected a list of regular expressions, got {json.dumps(value)}")
        for pattern in value:
            try:
                compile_re2(pattern)
            except re.error as e:
                raise FilterError(f"{at}: invalid regular expression {pattern!r}: {e}") from e
        out[key] = list(value)
    return out


def parse_redaction_filter_lines(text: str) -> list[dict[str, list[str]]]:
    """Parse `--redaction-filters` syntax (JSON objects, one per line); raises FilterError."""
    return [
        normalize_redaction_filter(obj, f"redaction filter on line {line}")
        for line, obj in decode_json_objects(text, "redaction filter")
    ]


def _redact_groups(m: re.Match[str]) -> str:
    text = m.group(0)
    base = m.start()
    parts: list[str] = []
    last = 0
    for g in range(1, (m.re.groups or 0) + 1):
        start, end = m.span(g)
        if start < 0 or start - base < last:
            continue  # group did not take part, or is nested in one already redacted
        parts.append(text[last : start - base])
        parts.append(REDACTION_STR)
        last = end - base
    parts.append(text[last:])
    return "".join(parts)


class RedactionFilters:
    """Compiled redaction filters; falsy when there are none."""

    def __init__(self, filters: Iterable[dict[str, Any]]) -> None:
        self._filters: list[tuple[list[re.Pattern[str]], list[re.Pattern[str]]]] = []
        for i, raw in enumerate(filters):
            f = normalize_redaction_filter(raw, f"redaction filter {i + 1}")
            binaries = [compile_re2(p) for p in f["binary_regex"]]
            redacts = [compile_re2(p) for p in f["redact"]]
            if redacts:
                self._filters.append((binaries, redacts))

    def __bool__(self) -> bool:
        return bool(self._filters)

    def redact_arguments(self, binary: str, arguments: str) -> str:
        for binaries, redacts in self._filters:
            if binaries and not any(b.search(binary) for b in binaries):
                continue
            for pattern in redacts:
                arguments = pattern.sub(_redact_groups, arguments)
        return arguments

    def redact_environment(self, binary: str, envs: list[str]) -> list[str]:
        """Redact `KEY=VALUE` strings, as Tetragon does before building EnvVar messages."""
        return [self.redact_arguments(binary, env) for env in envs]

    def _redact_process(self, proc: dict[str, Any]) -> dict[str, Any]:
        binary = proc.get("binary", "")
        changed: dict[str, Any] = {}
        args = proc.get("arguments")
        if args:
            new_args = self.redact_arguments(binary, args)
            if new_args != args:
                changed["arguments"] = new_args
        envs = proc.get("environment_variables")
        if envs:
            new_envs = []
            for env in envs:
                key, value = env.get("Key", ""), env.get("Value", "")
                redacted = self.redact_arguments(binary, f"{key}={value}")
                new_key, sep, new_value = redacted.partition("=")
                new_envs.append(
                    env if redacted == f"{key}={value}" else {**env, "Key": new_key, "Value": new_value}
                )
            if any(a is not b for a, b in zip(new_envs, envs, strict=True)):
                changed["environment_variables"] = new_envs
        return {**proc, **changed} if changed else proc

    def apply(self, event: Event) -> Event:
        """Redact process, parent and ancestors of an event; the same object when nothing changes."""
        key = next(iter(event))
        body = event[key]
        if not isinstance(body, dict):
            return event
        new_body: dict[str, Any] | None = None
        for who in ("process", "parent"):
            proc = body.get(who)
            if proc is not None:
                new_proc = self._redact_process(proc)
                if new_proc is not proc:
                    new_body = new_body or dict(body)
                    new_body[who] = new_proc
        ancestors = body.get("ancestors")
        if ancestors:
            new_ancestors = [self._redact_process(a) for a in ancestors]
            if any(a is not b for a, b in zip(new_ancestors, ancestors, strict=True)):
                new_body = new_body or dict(body)
                new_body["ancestors"] = new_ancestors
        if new_body is None:
            return event
        out = dict(event)
        out[key] = new_body
        return out


def compile_redaction(filters: Iterable[dict[str, Any]]) -> Callable[[Event], Event] | None:
    """`event -> event` applying the filters, or None when there are none."""
    compiled = RedactionFilters(filters)
    return compiled.apply if compiled else None
