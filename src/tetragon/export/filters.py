"""Tetragon event filters (`Filter` in events.proto) over the agent's JSON-shaped event dicts.

Semantics follow Tetragon's pkg/filters: a list of filters matches when ANY filter matches (OR);
one filter matches when ALL of its set fields match (AND); a list-valued field matches when ANY
of its values matches (OR). A field that is present but an empty list matches nothing (Go's
`!= nil` check), an empty filter `{}` matches everything. Regexes search anywhere in the string
(Go `MatchString`). Events without a process (rate_limit_info, process_throttle) match no
process-based field, except `health_check: false` (no probe is involved).

`pid_set` is evaluated statelessly: it matches when the process, its parent or any ancestor
carried *in the event itself* has one of the pids. Tetragon additionally remembers children of
matched processes; without `--enable-ancestors` a grandchild therefore only matches here when its
parent is in the set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tetragon.export.filterspec import (
    CAPABILITIES,
    EVENT_TYPES,
    FILTER_FIELDS,
    FilterError,
    compile_re2,
    normalize_filter,
    parse_filter_lines,
)
from tetragon.export.labels import parse_label_selector
from tetragon.jsontypes import Event

__all__ = [
    "CAPABILITIES",
    "EVENT_TYPES",
    "FILTER_FIELDS",
    "FilterError",
    "compile_allow_deny",
    "compile_filters",
    "event_allowed",
    "match_all",
    "normalize_filter",
    "parse_filter_lines",
]

Predicate = Callable[[Event], bool]
_BodyPredicate = Callable[[dict[str, Any]], bool]


# ---------------------------------------------------------------------------------------------
# Compilation: each set field becomes a predicate over the event body (the value under the
# event-type key); the event-type key itself is only needed by event_set.


def _regex_any(patterns: list[str]) -> Callable[[str], bool]:
    compiled = [compile_re2(p).search for p in patterns]
    if len(compiled) == 1:
        only = compiled[0]
        return lambda s: only(s) is not None
    return lambda s: any(search(s) is not None for search in compiled)


def _process_field(match: Callable[[str], bool], field: str, who: str = "process") -> _BodyPredicate:
    def pred(body: dict[str, Any]) -> bool:
        proc = body.get(who)
        return proc is not None and match(proc.get(field, ""))

    return pred


def _pod_field(match: Callable[[str], bool], field: str) -> _BodyPredicate:
    def pred(body: dict[str, Any]) -> bool:
        pod = (body.get("process") or {}).get("pod")
        return pod is not None and match(pod.get(field, ""))

    return pred


def _ancestor_binaries(match: Callable[[str], bool]) -> _BodyPredicate:
    def pred(body: dict[str, Any]) -> bool:
        return any(match(a.get("binary", "")) for a in body.get("ancestors") or ())

    return pred


def _container_name(match: Callable[[str], bool]) -> _BodyPredicate:
    def pred(body: dict[str, Any]) -> bool:
        container = ((body.get("process") or {}).get("pod") or {}).get("container")
        return container is not None and match(container.get("name", ""))

    return pred


def _namespace(namespaces: list[str]) -> _BodyPredicate:
    wanted = frozenset(namespaces)
    host = "" in wanted

    def pred(body: dict[str, Any]) -> bool:
        proc = body.get("process")
        if proc is None:
            return False
        pod = proc.get("pod")
        return host if pod is None else pod.get("namespace", "") in wanted

    return pred


def _labels(selectors: list[str]) -> _BodyPredicate:
    compiled = [parse_label_selector(s) for s in selectors]

    def pred(body: dict[str, Any]) -> bool:
        pod = (body.get("process") or {}).get("pod")
        if pod is None:
            return False  # host processes never match a label selector
        labels = pod.get("pod_labels") or {}
        return any(sel(labels) for sel in compiled)

    return pred


def _pids(pids: list[int]) -> _BodyPredicate:
    wanted = frozenset(pids)

    def pred(body: dict[str, Any]) -> bool:
        proc = body.get("process")
        return proc is not None and proc.get("pid") in wanted

    return pred


def _pid_set(pids: list[int]) -> _BodyPredicate:
    wanted = frozenset(pids)

    def pred(body: dict[str, Any]) -> bool:
        proc = body.get("process")
        if proc is None:
            return False
        if proc.get("pid") in wanted:
            return True
        parent = body.get("parent")
        if parent is not None and parent.get("pid") in wanted:
            return True
        return any(a.get("pid") in wanted for a in body.get("ancestors") or ())

    return pred


def _health_check(want: bool) -> _BodyPredicate:
    def probe(proc: dict[str, Any] | None) -> bool:
        if proc is None:
            return False
        container = (proc.get("pod") or {}).get("container")
        return container is not None and bool(container.get("maybe_exec_probe"))

    def pred(body: dict[str, Any]) -> bool:
        is_probe = probe(body.get("process")) or probe(body.get("parent"))
        return is_probe if want else not is_probe

    return pred


def _in_init_tree(want: bool) -> _BodyPredicate:
    def pred(body: dict[str, Any]) -> bool:
        proc = body.get("process")
        return proc is not None and bool(proc.get("in_init_tree", False)) == want

    return pred


def _policy_names(names: list[str]) -> _BodyPredicate:
    wanted = frozenset(names)

    def pred(body: dict[str, Any]) -> bool:
        name = body.get("policy_name", "")
        return name != "" and name in wanted

    return pred


def _cap_set_matches(have: frozenset[str], mode: str, caps: frozenset[str]) -> bool:
    if mode == "any":
        return not have.isdisjoint(caps)
    if mode == "all":
        return caps <= have
    if mode == "exactly":
        return have == caps
    return have.isdisjoint(caps)  # none


def _capabilities(spec: dict[str, dict[str, list[str]]]) -> _BodyPredicate:
    checks = [(cap_set, mode, frozenset(caps)) for cap_set, m in spec.items() for mode, caps in m.items()]

    def pred(body: dict[str, Any]) -> bool:
        proc = body.get("process")
        caps = proc.get("cap") if proc is not None else None
        if caps is None:
            return False
        return all(_cap_set_matches(frozenset(caps.get(s) or ()), mode, want) for s, mode, want in checks)

    return pred


def _never(body: dict[str, Any]) -> bool:
    return False


_BUILDERS: dict[str, Callable[[Any], _BodyPredicate]] = {
    "binary_regex": lambda v: _process_field(_regex_any(v), "binary"),
    "parent_binary_regex": lambda v: _process_field(_regex_any(v), "binary", "parent"),
    "arguments_regex": lambda v: _process_field(_regex_any(v), "arguments"),
    "parent_arguments_regex": lambda v: _process_field(_regex_any(v), "arguments", "parent"),
    "container_id": lambda v: _process_field(_regex_any(v), "docker"),
    "pod_regex": lambda v: _pod_field(_regex_any(v), "name"),
    "namespace_regex": lambda v: _pod_field(_regex_any(v), "namespace"),
    "ancestor_binary_regex": lambda v: _ancestor_binaries(_regex_any(v)),
    "container_name_regex": lambda v: _container_name(_regex_any(v)),
    "namespace": _namespace,
    "labels": _labels,
    "pid": _pids,
    "pid_set": _pid_set,
    "health_check": _health_check,
    "in_init_tree": _in_init_tree,
    "policy_names": _policy_names,
    "capabilities": _capabilities,
}


def _body_predicates(f: dict[str, Any]) -> list[_BodyPredicate]:
    preds: list[_BodyPredicate] = []
    for key, value in f.items():
        if key == "event_set" or (key == "cel_expression" and value):  # CEL needs the event key
            continue
        if isinstance(value, list) and not value:
            preds.append(_never)  # present but empty: Go builds a filter with nothing to match
        else:
            preds.append(_BUILDERS[key](value))
    return preds


def _compile_one(f: dict[str, Any]) -> Predicate:
    preds = _body_predicates(f)
    event_keys = frozenset(name.lower() for name in f["event_set"]) if "event_set" in f else None
    cel_match = None
    if f.get("cel_expression"):
        from tetragon.export.celfilter import compile_cel  # the CEL library only when a filter uses it

        cel_match = compile_cel(f["cel_expression"])

    if event_keys is not None and not preds and cel_match is None:

        def by_type(event: Event) -> bool:
            return next(iter(event)) in event_keys

        return by_type

    # Loops instead of all()/any() over generators: this runs for every event.
    def match(event: Event) -> bool:
        key = next(iter(event))
        if event_keys is not None and key not in event_keys:
            return False
        body = event[key]
        if not isinstance(body, dict):
            return False
        for pred in preds:  # noqa: SIM110 - a loop is ~2x faster than all() over a generator
            if not pred(body):
                return False
        return cel_match is None or cel_match(key, body)

    return match


def match_all(event: Event) -> bool:
    """The predicate of an empty filter list."""
    return True


def compile_filters(filters: Iterable[dict[str, Any]]) -> Predicate:
    """Compile Filter dicts into one predicate (OR across filters). Empty list: `match_all`."""
    compiled = [_compile_one(normalize_filter(f, f"filter {i + 1}")) for i, f in enumerate(filters)]
    if not compiled:
        return match_all
    if len(compiled) == 1:
        return compiled[0]

    def match_any(event: Event) -> bool:
        for m in compiled:  # noqa: SIM110 - see above
            if m(event):
                return True
        return False

    return match_any


def event_allowed(allow: Predicate | None, deny: Predicate | None, event: Event) -> bool:
    """allowed = (no allow filters or allow matches) and not deny matches. `None` or the predicate
    of an empty list (`match_all`) means "no filters" on either side."""
    if allow is not None and allow is not match_all and not allow(event):
        return False
    return deny is None or deny is match_all or not deny(event)


def compile_allow_deny(allow: list[dict[str, Any]], deny: list[dict[str, Any]]) -> Predicate | None:
    """One predicate for an allow list and a deny list; None when both are empty (allow all)."""
    allow_pred = compile_filters(allow) if allow else None
    deny_pred = compile_filters(deny) if deny else None
    if allow_pred is None and deny_pred is None:
        return None
    if deny_pred is None:
        assert allow_pred is not None
        return allow_pred
    if allow_pred is None:
        return lambda event: not deny_pred(event)
    return lambda event: allow_pred(event) and not deny_pred(event)
