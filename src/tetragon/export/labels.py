"""Kubernetes label selectors, the subset Tetragon's `labels` filter accepts from users.

Grammar (as `kubectl get -l`): requirements separated by commas, all of which must hold:
`key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`.
An empty selector selects everything. `!=` and `notin` also hold when the key is absent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

LabelPredicate = Callable[[Mapping[str, str]], bool]

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KEY_RE = re.compile(rf"^({_DNS_SUBDOMAIN}/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")
# Operators first (longest match first), then words: anything that is not a separator or operator.
_TOKEN_RE = re.compile(r"\s*(==|!=|=|!|\(|\)|,|[^\s,()=!]+)")


class LabelSelectorError(ValueError):
    pass


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:  # pragma: no cover - the token pattern accepts any non-space character
            raise LabelSelectorError(f"unexpected character at position {pos}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _check_key(key: str) -> str:
    if len(key) > 253 + 1 + 63 or not _KEY_RE.match(key):
        raise LabelSelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if not _VALUE_RE.match(value):
        raise LabelSelectorError(f"invalid label value {value!r}")
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise LabelSelectorError("unexpected end of selector")
        self.i += 1
        return tok

    def word(self, what: str) -> str:
        tok = self.take()
        if tok in ("==", "!=", "=", "!", "(", ")", ","):
            raise LabelSelectorError(f"expected {what}, found {tok!r}")
        return tok

    def value_set(self) -> frozenset[str]:
        if self.take() != "(":
            raise LabelSelectorError("expected '(' after in/notin")
        values: set[str] = set()
        expect_value = True
        while True:
            tok = self.take()
            if tok == ")":
                if expect_value and values:
                    raise LabelSelectorError("missing value after ','")
                return frozenset(values)
            if tok == ",":
                if expect_value:
                    raise LabelSelectorError("missing value before ','")
                expect_value = True
                continue
            if not expect_value:
                raise LabelSelectorError(f"expected ',' or ')', found {tok!r}")
            values.add(_check_value(tok))
            expect_value = False

    def requirement(self) -> LabelPredicate:
        if self.peek() == "!":
            self.take()
            key = _check_key(self.word("label key"))
            return lambda labels: key not in labels
        key = _check_key(self.word("label key"))
        op = self.peek()
        if op is None or op == ",":
            return lambda labels: key in labels
        self.take()
        if op in ("=", "=="):
            value = _check_value(self._value_or_empty())
            return lambda labels: labels.get(key) == value
        if op == "!=":
            value = _check_value(self._value_or_empty())
            return lambda labels: labels.get(key) != value
        if op == "in":
            values = self.value_set()
            return lambda labels: labels.get(key) in values
        if op == "notin":
            values = self.value_set()
            return lambda labels: labels.get(key) not in values
        raise LabelSelectorError(f"unknown operator {op!r} after key {key!r}")

    def _value_or_empty(self) -> str:
        tok = self.peek()
        if tok is None or tok == ",":
            return ""  # `key=` selects an empty value, as in Kubernetes
        return self.word("label value")


def parse_label_selector(text: str) -> LabelPredicate:
    """Compile a selector into a predicate over a label mapping; raises LabelSelectorError."""
    parser = _Parser(text)
    reqs: list[LabelPredicate] = []
    while parser.peek() is not None:
        reqs.append(parser.requirement())
        tok = parser.peek()
        if tok is None:
            break
        if tok != ",":
            raise LabelSelectorError(f"expected ',' between requirements, found {tok!r}")
        parser.take()
        if parser.peek() is None:
            raise LabelSelectorError("trailing ',' in selector")
    if not reqs:
        return lambda labels: True
    if len(reqs) == 1:
        return reqs[0]
    return lambda labels: all(req(labels) for req in reqs)
