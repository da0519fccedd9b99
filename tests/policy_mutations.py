"""A seeded, bounded generator of malformed and mutated TracingPolicies (YAML text).

Shared by tests/unit/test_policy_hostile.py (parse and check only), tests/e2e/test_policy_fuzz.py
(through a real agent's AddTracingPolicy) and bench/policy_fuzz.py (the full 10,000). Every policy
is named `fuzz-<n>` unless the mutation is about the name, so a valid one can be deleted again.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import yaml

Doc = dict[str, Any]

BASES: list[Doc] = [
    {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "base"},
        "spec": {
            "tracepoints": [
                {
                    "subsystem": "syscalls",
                    "event": "sys_enter_getcwd",
                    "args": [{"index": 6, "type": "uint64"}],
                    "selectors": [
                        {
                            "matchArgs": [{"index": 0, "operator": "Equal", "values": ["1"]}],
                            "matchBinaries": [{"operator": "In", "values": ["/usr/bin/true"]}],
                            "matchActions": [{"action": "Post", "rateLimit": "1m"}],
                        }
                    ],
                }
            ]
        },
    },
    {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "base"},
        "spec": {
            "kprobes": [
                {
                    "call": "sys_getcwd",
                    "syscall": True,
                    "args": [{"index": 1, "type": "uint64"}],
                    "selectors": [
                        {
                            "matchPIDs": [{"operator": "NotIn", "followForks": True, "values": [1]}],
                            "matchArgs": [{"index": 1, "operator": "GT", "values": ["9999999"]}],
                            "matchActions": [{"action": "Sigkill"}],
                        }
                    ],
                }
            ],
            "options": [{"name": "policy-mode", "value": "monitor"}],
        },
    },
    {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicyNamespaced",
        "metadata": {"name": "base", "namespace": "default"},
        "spec": {
            "uprobes": [
                {"path": "/usr/bin/true", "symbols": ["main"], "args": [{"index": 0, "type": "int"}]}
            ],
            "lists": [{"name": "l", "type": "syscalls", "values": ["sys_getcwd"]}],
        },
    },
]

ODD_STRINGS = [
    "",
    "  ",
    "In",
    "list:nope",
    "sys_nothing",
    "../../../../etc",
    "/root/secret/binary",
    "/" + "d" * 300 + "/x",
    "/" + "a/" * 3000,
    "\u202e\u0645\u0631\u062d\u0628\u0627",
    "e\u0301\u0301\u0301",
    "\U0001f600" * 50,
    "\x00",
    "a\x00b",
    "NaN",
    "0x" + "f" * 40,
    "-1",
    "99999999999999999999999",
    "~",
    "*",
    "{{}}",
]
ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1 << 64,
    -(1 << 63) - 1,
    1.5,
    float("inf"),
    [],
    {},
    [None],
    {"x": 1},
    [[[]]],
    *ODD_STRINGS,
]


# --- structural mutations (on the decoded document) ------------------------------------------------
def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) of the document tree."""
    if isinstance(node, dict):
        for key in list(node):
            out.append((node, key))
            _slots(node[key], out)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            out.append((node, i))
            _slots(item, out)
    return out


def _mapping(doc: Doc, key: str) -> Doc:
    """doc[key] as a mapping (an earlier mutation may have replaced or deleted it)."""
    if not isinstance(doc.get(key), dict):
        doc[key] = {}
    value: Doc = doc[key]
    return value


def _delete_key(rng: random.Random, doc: Doc) -> None:
    slots = [(c, k) for c, k in _slots(doc, []) if isinstance(c, dict)]
    if slots:
        container, key = rng.choice(slots)
        del container[key]


def _wrong_type(rng: random.Random, doc: Doc) -> None:
    slots = _slots(doc, [])
    if slots:
        container, key = rng.choice(slots)
        container[key] = copy.deepcopy(rng.choice(ODD_VALUES))


def _huge_list(rng: random.Random, doc: Doc) -> None:
    lists = [(c, k) for c, k in _slots(doc, []) if isinstance(c[k], list) and c[k]]
    if lists:
        container, key = rng.choice(lists)
        # bounded: two of these in a row would otherwise multiply to millions of entries
        container[key] = (container[key] * rng.choice((50, 500, 5000)))[:10_000]


def _bad_operator(rng: random.Random, doc: Doc) -> None:
    ops = [(c, k) for c, k in _slots(doc, []) if k in ("operator", "action", "type", "value")]
    if ops:
        container, key = rng.choice(ops)
        container[key] = rng.choice(["Equals", "in", "NotEqual ", "Sigkil", "uint65", "", "Post\n", "kill"])


def _many_selectors(rng: random.Random, doc: Doc) -> None:
    for section in ("kprobes", "tracepoints", "uprobes"):
        hooks = _mapping(doc, "spec").get(section)
        for hook in hooks if isinstance(hooks, list) else []:
            if isinstance(hook, dict):
                hook["selectors"] = [{"matchActions": [{"action": "Post"}]}] * 10_000
                return


def _many_hooks(rng: random.Random, doc: Doc) -> None:
    spec = _mapping(doc, "spec")
    spec["tracepoints"] = [
        {"subsystem": "syscalls", "event": "sys_enter_getcwd"} for _ in range(rng.choice((200, 1000, 10_000)))
    ]


def _odd_name(rng: random.Random, doc: Doc) -> None:
    _mapping(doc, "metadata")["name"] = rng.choice(ODD_STRINGS + ["x" * 300])


def _odd_target(rng: random.Random, doc: Doc) -> None:
    spec = _mapping(doc, "spec")
    choice = rng.randrange(3)
    if choice == 0:
        spec["uprobes"] = [{"path": rng.choice(ODD_STRINGS), "symbols": [rng.choice(ODD_STRINGS)]}]
    elif choice == 1:
        spec["tracepoints"] = [{"subsystem": rng.choice(ODD_STRINGS), "event": rng.choice(ODD_STRINGS)}]
    else:
        spec["kprobes"] = [{"call": rng.choice(ODD_STRINGS) + "x" * rng.choice((0, 600))}]


STRUCTURAL: list[Callable[[random.Random, Doc], None]] = [
    _delete_key,
    _wrong_type,
    _huge_list,
    _bad_operator,
    _many_selectors,
    _many_hooks,
    _odd_name,
    _odd_target,
]


# --- text mutations (on the YAML text) ---------------------------------------------------------------
def _billion_laughs(rng: random.Random, text: str) -> str:
    width = rng.choice((5, 9))
    lines = ["lol0: &l0 [lol]"]
    for i in range(1, rng.choice((6, 9, 12))):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return text.replace("spec:", "\n".join(lines) + "\nspec:", 1)


def _deep_nesting(rng: random.Random, text: str) -> str:
    depth = rng.choice((100, 2000, 20_000))
    return text.replace("name: ", "name: " + "[" * depth + "x" + "]" * depth + " #", 1)


def _big_int(rng: random.Random, text: str) -> str:
    return re.sub(r"index: \d+", "index: " + "9" * rng.choice((30, 5000, 100_000)), text, count=1)


def _bad_timestamp(rng: random.Random, text: str) -> str:
    stamp = rng.choice(["2001-13-45", "99999-12-14", "2001-01-01T99:99:99", "0000-00-00"])
    return text.replace("name: ", f"name: !!timestamp {stamp} #", 1)


def _bad_tags(rng: random.Random, text: str) -> str:
    tag = rng.choice(
        ["!!binary '%%%'", "!!python/object:os.system x", "!!set {a, b}", "!!float nope", "!!omap x"]
    )
    return text.replace("name: ", f"name: {tag} #", 1)


def _huge_string(rng: random.Random, text: str) -> str:
    size = rng.choice((200_000, 2_000_000, 9_000_000))
    return text.replace("name: ", "name: " + "x" * size + " #", 1)


def _escapes(rng: random.Random, text: str) -> str:
    escape = rng.choice(['"\\ud800"', '"\\0"', '"\\x00abc"', '"\\U0010ffff"', '"\\e\\a\\b"'])
    return text.replace("name: ", f"name: {escape} #", 1)


def _flip(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(chars))
        chars[i] = rng.choice(["[", "{", ":", "-", "&", "*", "!", "'", '"', "\t", "\n", "  ", "%", "|", ""])
    return "".join(chars)


def _truncate(rng: random.Random, text: str) -> str:
    return text[: rng.randrange(len(text))]


def _duplicate_key(rng: random.Random, text: str) -> str:
    return text.replace("spec:", "spec: {}\nspec:", 1)


def _documents(rng: random.Random, text: str) -> str:
    twice = text + "---\n" + text if len(text) < 1 << 20 else text  # below gRPC's 10 MiB message limit
    return rng.choice(["", "---\n", twice, "- a\n- b\n", "42", "~"])


TEXTUAL: list[Callable[[random.Random, str], str]] = [
    _billion_laughs,
    _deep_nesting,
    _big_int,
    _bad_timestamp,
    _bad_tags,
    _huge_string,
    _escapes,
    _flip,
    _truncate,
    _duplicate_key,
    _documents,
]


def _dump(doc: Any) -> str:
    return str(yaml.dump(doc, Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True, width=1 << 20))


def mutated_policy(rng: random.Random, n: int) -> str:
    """One mutated policy: one to three structural mutations, then maybe one textual one."""
    doc = copy.deepcopy(rng.choice(BASES))
    doc["metadata"]["name"] = f"fuzz-{n}"
    for _ in range(rng.randint(0, 3)):
        rng.choice(STRUCTURAL)(rng, doc)
    text = _dump(doc)
    if rng.random() < 0.5:
        text = rng.choice(TEXTUAL)(rng, text)
    return text


def policies(seed: int, count: int) -> Iterator[tuple[int, str]]:
    """`count` mutated policies, the same ones for the same seed."""
    rng = random.Random(seed)
    for n in range(count):
        yield n, mutated_policy(rng, n)


# A refusal names where the problem is: a field path, a YAML position, or the whole document.
FIELD_PATH = re.compile(
    r"^(apiVersion|kind|metadata|spec|policy)\b|\(line \d+, column \d+\)|^invalid YAML|^empty policy|"
    r"^expected a single YAML document|^policy must be a YAML mapping|"
    r"^[A-Za-z_][\w-]*: unknown field$"  # a top-level key of the document (the alias mutation's)
)
