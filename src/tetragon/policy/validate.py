"""Checks of a decoded TracingPolicy that span several fields, and the defaults that depend on them.

Run by `policy.load` after the schema decoded the document: names are well formed, referenced lists
and selector macros exist, limits hold (spec §3.5), matchArgs name arguments the hook has. The
first problem raises a one-line PolicyError naming the field path.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

from tetragon.policy.errors import PolicyError
from tetragon.policy.names import (
    API_VERSION,
    HOOK_SECTIONS,
    INT_ARG_TYPES,
    KINDS,
    LIST_PREFIX,
    MAX_ARGS,
    MAX_BINARY_ENTRIES,
    MAX_ENFORCERS,
    MAX_MATCH_ARGS,
    MAX_MATCH_PIDS_VALUES,
    MAX_MATCH_VALUES,
    MAX_MESSAGE,
    MAX_NAMESPACE_ENTRIES,
    MAX_NAMESPACE_VALUES,
    MAX_POSTFIX_LEN,
    MAX_PREFIX_LEN,
    MAX_RESOLVE_DEPTH,
    MAX_SELECTORS,
    MAX_TAGS,
    POLICY_MODES,
)
from tetragon.policy.schema import (
    ArgSelector,
    Hook,
    KProbeArg,
    KProbeSpec,
    Selector,
    TracepointSpec,
    TracingPolicy,
    UProbeSpec,
)
from tetragon.policy.syscalls import parse_syscall


def validate(policy: TracingPolicy, namespace: str = "") -> TracingPolicy:
    """The policy, checked; a TracingPolicyNamespaced without metadata.namespace goes to `namespace`."""
    if policy.namespaced and not policy.metadata.namespace:
        policy.metadata.namespace = namespace
    _Checker(policy).run()
    return policy


# --- semantic checks ----------------------------------------------------------------------------------
class _Checker:
    def __init__(self, policy: TracingPolicy) -> None:
        self.p = policy
        self.lists = {lst.name for lst in policy.spec.lists}

    @staticmethod
    def fail(path: str, msg: str) -> PolicyError:
        return PolicyError(f"{path}: {msg}")

    def check_count(self, path: str, count: int, limit: int, noun: str) -> None:
        if count > limit:
            raise self.fail(path, f"at most {limit} {noun} allowed, got {count}")

    def run(self) -> None:
        p = self.p
        if p.api_version != API_VERSION:
            raise self.fail("apiVersion", f"must be {API_VERSION}, got {describe(p.api_version)}")
        if p.kind not in KINDS:
            raise self.fail(
                "kind", f"must be TracingPolicy or TracingPolicyNamespaced, got {describe(p.kind)}"
            )
        self.check_metadata()
        spec = p.spec
        self.check_lists()
        self.check_count("spec.enforcers", len(spec.enforcers), MAX_ENFORCERS, "enforcer")
        for i, enf in enumerate(spec.enforcers):
            for j, call in enumerate(enf.calls):
                self.check_list_ref(f"spec.enforcers[{i}].calls[{j}]", call)
        for i, opt in enumerate(spec.options):
            if opt.name == "policy-mode" and opt.value not in POLICY_MODES:
                raise self.fail(
                    f"spec.options[{i}].value", f"invalid policy-mode '{opt.value}' (want enforce or monitor)"
                )
            if opt.name == "override-method" and opt.value not in ("override-return", "fmod-ret"):
                raise self.fail(
                    f"spec.options[{i}].value",
                    f"invalid override-method '{opt.value}' (want override-return or fmod-ret)",
                )
        if spec.host_selector is not None:
            if p.namespaced:
                raise self.fail("spec.hostSelector", "not allowed in a TracingPolicyNamespaced")
            if not spec.host_selector.is_empty():
                raise self.fail("spec.hostSelector", "only null or {} is supported")
        for name, sel in spec.selectors_macros.items():
            self.check_selector(f"spec.selectorsMacros.{name}", sel, None, section="macro")
        for section in HOOK_SECTIONS:
            for i, hook in enumerate(getattr(spec, section)):
                self.check_hook(f"spec.{section}[{i}]", hook, section)

    def check_metadata(self) -> None:
        md = self.p.metadata
        if not md.name:
            raise self.fail("metadata.name", "required")
        if len(md.name) > 253 or re.search(r"[\s/]", md.name):
            raise self.fail(
                "metadata.name", f"invalid name '{_short(md.name)}' (no '/' or whitespace, ≤253 chars)"
            )
        if self.p.namespaced and not md.namespace:
            raise self.fail("metadata.namespace", "required for a TracingPolicyNamespaced")

    def check_lists(self) -> None:
        seen: set[str] = set()
        for i, lst in enumerate(self.p.spec.lists):
            path = f"spec.lists[{i}]"
            if not lst.name:
                raise self.fail(f"{path}.name", "required")
            if lst.name in seen:
                raise self.fail(f"{path}.name", f"duplicate list name '{lst.name}'")
            seen.add(lst.name)
            if lst.type == "generated_ftrace" and not lst.pattern:
                raise self.fail(f"{path}.pattern", "required for a generated_ftrace list")
            if lst.type == "syscalls":
                for j, value in enumerate(lst.values):
                    try:
                        parse_syscall(value)
                    except PolicyError as err:
                        raise self.fail(f"{path}.values[{j}]", str(err)) from None

    def check_list_ref(self, path: str, value: str) -> None:
        if value.startswith(LIST_PREFIX):
            name = value[len(LIST_PREFIX) :]
            if name not in self.lists:
                raise self.fail(path, f"unknown list '{name}'")

    def check_hook(self, path: str, hook: Hook, section: str) -> None:
        if len(hook.message) > MAX_MESSAGE:
            raise self.fail(f"{path}.message", f"longer than {MAX_MESSAGE} characters ({len(hook.message)})")
        self.check_count(f"{path}.tags", len(hook.tags), MAX_TAGS, "tags")
        self.check_count(f"{path}.selectors", len(hook.selectors), MAX_SELECTORS, "selectors")
        data: list[KProbeArg] = getattr(hook, "data", [])
        self.check_count(f"{path}.args", len(hook.args) + len(data), MAX_ARGS, "args+data")
        for field, args in (("args", hook.args), ("data", data)):
            for j, arg in enumerate(args):
                self.check_arg(f"{path}.{field}[{j}]", arg)
        ret_arg: KProbeArg | None = getattr(hook, "return_arg", None)
        if ret_arg is not None:
            self.check_arg(f"{path}.returnArg", ret_arg)
        if getattr(hook, "return_", False) and ret_arg is None:
            raise self.fail(f"{path}.returnArg", "required when return is true")
        if isinstance(hook, KProbeSpec):
            if not hook.call:
                raise self.fail(f"{path}.call", "required")
            self.check_list_ref(f"{path}.call", hook.call)
            if hook.return_arg_action and not hook.return_:
                raise self.fail(f"{path}.returnArgAction", "requires return: true")
        self.check_target(path, hook)
        for k, sel in enumerate(hook.selectors):
            self.check_selector(f"{path}.selectors[{k}]", sel, hook, section)

    def check_target(self, path: str, hook: Hook) -> None:
        """Names that reach the kernel or the filesystem: bounded, and no way out of tracefs."""
        if isinstance(hook, KProbeSpec) and (len(hook.call) > _KSYM_NAME_LEN or "\0" in hook.call):
            raise self.fail(f"{path}.call", f"not a kernel function name ({_short(hook.call)})")
        if isinstance(hook, TracepointSpec):
            for field in ("subsystem", "event"):
                value = getattr(hook, field)
                if not _TRACEFS_NAME.fullmatch(value):
                    raise self.fail(f"{path}.{field}", f"not a tracepoint name ({_short(value)})")
        if isinstance(hook, UProbeSpec):
            for j, symbol in enumerate(hook.symbols):
                if not symbol or len(symbol) > _KSYM_NAME_LEN or "\0" in symbol:
                    raise self.fail(f"{path}.symbols[{j}]", f"not a symbol name ({_short(symbol)})")
            check_path_text(f"{path}.path", hook.path)

    def check_arg(self, path: str, arg: KProbeArg) -> None:
        if arg.size_arg_index and arg.type not in ("char_buf", "char_iovec"):
            raise self.fail(f"{path}.sizeArgIndex", "only valid for char_buf and char_iovec arguments")
        if arg.resolve and len(arg.resolve.split(".")) > MAX_RESOLVE_DEPTH:
            raise self.fail(f"{path}.resolve", f"deeper than {MAX_RESOLVE_DEPTH} fields")

    def check_selector(self, path: str, sel: Selector, hook: Hook | None, section: str) -> None:
        for m, macro in enumerate(sel.macros):
            if macro not in self.p.spec.selectors_macros:
                raise self.fail(f"{path}.macros[{m}]", f"unknown selector macro '{macro}'")
        self.check_count(f"{path}.matchArgs", len(sel.match_args), MAX_MATCH_ARGS, "entries")
        data: list[KProbeArg] = getattr(hook, "data", []) if hook is not None else []
        for field, entries, args in (
            ("matchArgs", sel.match_args, hook.args if hook is not None else None),
            ("matchData", sel.match_data, data if hook is not None else None),
            ("matchReturnArgs", sel.match_return_args, None),
        ):
            for q, entry in enumerate(entries):
                self.check_arg_selector(f"{path}.{field}[{q}]", entry, args, field, section == "tracepoints")
        for q, pids in enumerate(sel.match_pids):
            self.check_count(
                f"{path}.matchPIDs[{q}].values", len(pids.values), MAX_MATCH_PIDS_VALUES, "values"
            )
        for field, bins in (
            ("matchBinaries", sel.match_binaries),
            ("matchParentBinaries", sel.match_parent_binaries),
        ):
            self.check_count(f"{path}.{field}", len(bins), MAX_BINARY_ENTRIES, "entry")
        self.check_count(
            f"{path}.matchNamespaces", len(sel.match_namespaces), MAX_NAMESPACE_ENTRIES, "entries"
        )
        for q, ns in enumerate(sel.match_namespaces):
            self.check_count(
                f"{path}.matchNamespaces[{q}].values", len(ns.values), MAX_NAMESPACE_VALUES, "values"
            )
        for field, actions in (
            ("matchActions", sel.match_actions),
            ("matchReturnActions", sel.match_return_actions),
        ):
            for a, act in enumerate(actions):
                apath = f"{path}.{field}[{a}]"
                if act.action == "NotifyEnforcer" and not self.p.spec.enforcers:
                    raise self.fail(f"{apath}.action", "NotifyEnforcer requires spec.enforcers")
                if act.action == "Set" and section not in ("usdts", "macro"):
                    raise self.fail(f"{apath}.action", "Set is only supported in usdts")

    def check_arg_selector(
        self, path: str, entry: ArgSelector, args: list[KProbeArg] | None, field: str, positional: bool
    ) -> None:
        """`positional`: `index` is the position in the hook's args (tracepoints), not a function arg."""
        arg: KProbeArg | None = None
        if args is not None:
            if entry.args:
                for r, pos in enumerate(entry.args):
                    if pos >= len(args):
                        raise self.fail(
                            f"{path}.args[{r}]", f"no argument at position {pos} (the hook has {len(args)})"
                        )
                arg = args[entry.args[0]]
            else:
                if entry.index is None:
                    raise self.fail(path, "index or args required")
                if positional:
                    if entry.index >= len(args):
                        raise self.fail(
                            f"{path}.index",
                            f"no argument at position {entry.index} (the hook has {len(args)})",
                        )
                    return self.check_arg_values(path, entry, args[entry.index])
                found = [a for a in args if a.index == entry.index]
                if not found:
                    what = "data" if field == "matchData" else "args"
                    raise self.fail(f"{path}.index", f"no argument with index {entry.index} in {what}")
                arg = found[0]
        self.check_arg_values(path, entry, arg)

    def check_arg_values(self, path: str, entry: ArgSelector, arg: KProbeArg | None) -> None:
        op = entry.operator
        for r, value in enumerate(entry.values):
            vpath = f"{path}.values[{r}]"
            if op in ("InMap", "NotInMap"):
                self.check_list_ref(vpath, value)
            elif op in ("Prefix", "NotPrefix") and len(value) > MAX_PREFIX_LEN:
                raise self.fail(vpath, f"prefix longer than {MAX_PREFIX_LEN} characters")
            elif op in ("Postfix", "NotPostfix") and len(value) > MAX_POSTFIX_LEN:
                raise self.fail(vpath, f"postfix longer than {MAX_POSTFIX_LEN} characters")
        numeric_ops = ("Equal", "NotEqual", "GT", "LT", "Mask")
        if (
            arg is not None
            and arg.type in INT_ARG_TYPES
            and op in numeric_ops
            and len(entry.values) > MAX_MATCH_VALUES
        ):
            raise self.fail(
                f"{path}.values",
                f"at most {MAX_MATCH_VALUES} values allowed for {op}, got {len(entry.values)}",
            )


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean " + ("true" if value else "false")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    kind = {"str": "string", "int": "integer", "float": "number"}.get(
        type(value).__name__, type(value).__name__
    )
    return f"{kind} {text}"


# --- uprobe targets -----------------------------------------------------------------------------------
_KSYM_NAME_LEN = 511
_TRACEFS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_PATH_MAX = 4095
_NAME_MAX = 255
_MAX_SYMLINKS = 40


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def check_path_text(where: str, path: str) -> None:
    """A path the kernel can take (no ENAMETOOLONG, no NUL)."""
    if not path:
        raise PolicyError(f"{where}: required")
    raw = path.encode("utf-8")
    if len(raw) > _PATH_MAX or b"\0" in raw or any(len(part) > _NAME_MAX for part in raw.split(b"/")):
        raise PolicyError(f"{where}: not a usable path ({_short(path)})")


def check_paths_reachable(policy: TracingPolicy, uid: int, gids: set[int]) -> None:
    """Every uprobe and usdt path of the policy can be reached by `uid` (a non-root API caller).

    The agent runs as root, its API users need not: whether /root/secret exists must not show in the
    reply. A path through a directory the caller may not search is refused with one message, found or
    not; the check stops at that directory and never looks inside it.
    """
    hooks = [("uprobes", i, h.path) for i, h in enumerate(policy.spec.uprobes)]
    hooks += [("usdts", i, h.path) for i, h in enumerate(policy.spec.usdts)]
    for section, i, path in hooks:
        if not _searchable_path(path, uid, gids):
            raise PolicyError(
                f"spec.{section}[{i}].path: {_short(path)} is not a file uid {uid} can reach (found or "
                f"not: a {section[:-1]} target must lie under directories its caller may search)"
            )


def _searchable(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _searchable_path(path: str, uid: int, gids: set[int]) -> bool:
    """False when resolving `path` (symlinks included) enters a directory `uid` may not search; True
    when it ends or leaves the filesystem (a missing file is then reported by the compiler)."""
    parts = path.split("/")
    current = "/" if path.startswith("/") else os.getcwd()
    hops = 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current) or "/"
            continue
        try:
            if not _searchable(os.stat(current), uid, gids):
                return False
            nxt = os.path.join(current, name)
            if not stat.S_ISLNK(os.lstat(nxt).st_mode):
                current = nxt
                continue
            target = os.readlink(nxt)
        except OSError:
            return True
        hops += 1
        if hops > _MAX_SYMLINKS:
            return True
        parts = target.split("/") + parts
        if target.startswith("/"):
            current = "/"
    return True
