"""YAML text -> TracingPolicy: strict decoding, every error one line naming its field path.

`parse_policy(text)` reads one YAML document, decodes it into the schema's model (unknown fields,
duplicate keys and wrong types are errors, e.g. `spec.kprobes[0].args[1].type: unknown argument
type 'strin'`) and hands it to `policy.validate` for the checks that span several fields.

Hostile input is bounded before it costs anything: the text's size, the nesting depth and the number
of nodes the document expands to (aliases count once per use, so a "billion laughs" document stops
at the limit instead of filling memory); values YAML cannot construct (a 5,000-digit integer, a bad
`!!timestamp`, text that is not valid unicode) are errors with their line and column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from pydantic import ValidationError

from tetragon.policy.errors import PolicyError
from tetragon.policy.names import API_VERSION, KINDS
from tetragon.policy.schema import TracingPolicy
from tetragon.policy.validate import describe, validate

MAX_POLICY_BYTES = 1 << 20  # a Kubernetes object (etcd) holds ~1.5 MB; the largest real policies are ~100 KB
MAX_YAML_DEPTH = 64  # the schema is < 10 levels deep
MAX_YAML_NODES = 100_000  # after alias expansion; a 1,000-hook policy is ~40,000
_MAX_MESSAGE = 500  # characters of a refusal: values quoted in it are cut
_PYTHON_MESSAGE_BYTES = 64 << 10  # pure-Python PyYAML reads ~100 KB/s: only small documents get its messages


# --- YAML loading -------------------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (Tetragon decodes strictly) and reports values
    YAML cannot construct with their position."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        return _construct_object(self, super().construct_object, node, deep)


class _StrictCLoader(yaml.CSafeLoader):
    """The same with libyaml's parser: ~20x faster, so a 1 MiB policy is read in well under a second."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        return _construct_object(self, super().construct_object, node, deep)


def _construct_object(loader: Any, construct: Callable[..., Any], node: yaml.Node, deep: bool) -> Any:
    try:
        return construct(node, deep=deep)
    except (ValueError, OverflowError, TypeError, AttributeError) as exc:  # int('9' * 5000), bad !!timestamp
        tag = node.tag.rsplit(":", 1)[-1]
        reason = str(exc) if isinstance(exc, (ValueError, OverflowError)) else "malformed"
        problem = f"bad !!{tag} value: {_shorten(' '.join(reason.split()))}"
        raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


class _LimitError(yaml.MarkedYAMLError):
    """The document is too deep or expands to too many values."""

    def __init__(self, problem: str, event: yaml.Event) -> None:
        mark: Any = event.start_mark  # libyaml's events carry their own Mark type
        super().__init__(None, None, problem, mark)


def _check_bounds(events: Iterable[yaml.Event]) -> None:
    """Depth and expanded node count from the parser's events, before anything is composed (the
    composer recurses per level; aliases would multiply the constructed values)."""
    depth = nodes = 0
    anchored: dict[str, int] = {}  # anchor -> nodes of the value it names, expanded
    open_collections: list[tuple[str | None, int]] = []
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            nodes += anchored.get(event.anchor or "", 1)
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                anchored[event.anchor] = 1
            if not _encodable(event.value):
                raise _LimitError("text that is not valid unicode", event)
        elif isinstance(event, yaml.CollectionStartEvent):
            nodes += 1
            depth += 1
            open_collections.append((event.anchor, nodes - 1))
            if depth > MAX_YAML_DEPTH:
                raise _LimitError(f"nested deeper than {MAX_YAML_DEPTH} levels", event)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            anchor, before = open_collections.pop()
            if anchor is not None:
                anchored[anchor] = nodes - before
        if nodes > MAX_YAML_NODES:
            problem = f"more than {MAX_YAML_NODES} values (aliases expanded)"
            raise _LimitError(problem, event)


def _bounded_load(text: str, loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader]) -> list[Any]:
    _check_bounds(yaml.parse(text, Loader=loader))
    return list(yaml.load_all(text, Loader=loader))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from "\ud800" escapes
        return False
    return True


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictCLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_error(err: yaml.YAMLError) -> PolicyError:
    if isinstance(err, yaml.MarkedYAMLError):
        problem = err.problem or err.context or "syntax error"
        mark = err.problem_mark or err.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return PolicyError(f"invalid YAML: {problem}{where}")
    return PolicyError(f"invalid YAML: {' '.join(str(err).split())}")


def _load_documents(text: str) -> list[Any]:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_POLICY_BYTES:
        raise PolicyError(f"policy: {size} bytes, more than the {MAX_POLICY_BYTES} allowed")
    try:
        return _bounded_load(text, _StrictCLoader)
    except _LimitError as err:
        raise _yaml_error(err) from None
    except yaml.YAMLError as err:
        if size > _PYTHON_MESSAGE_BYTES:
            raise _yaml_error(err) from None
    # PyYAML's own messages (the ones users and tests know) for a document libyaml refused
    try:
        return _bounded_load(text, _StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise _yaml_error(err) from None


# --- error rendering ----------------------------------------------------------------------------------
def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_EXPECTED = {
    "bool_type": "a boolean",
    "int_type": "an integer",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "float_type": "a number",
}


def _render(err: Any) -> str:
    where = _path(err["loc"])
    typ = err["type"]
    ctx = err.get("ctx") or {}
    if typ == "missing":
        msg = "required"
    elif typ == "extra_forbidden":
        msg = "unknown field"
    elif typ in _EXPECTED:
        msg = f"expected {_EXPECTED[typ]}, got {describe(err.get('input'))}"
    elif typ == "greater_than_equal":
        msg = f"must be >= {ctx.get('ge')}, got {_shorten(str(err.get('input')))}"
    elif typ == "less_than_equal":
        msg = f"must be <= {ctx.get('le')}, got {_shorten(str(err.get('input')))}"
    else:
        msg = _shorten(err["msg"], 200)
    return f"{where}: {msg}" if where else msg


# --- public API ---------------------------------------------------------------------------------------
def policy_from_dict(doc: Any, namespace: str = "") -> TracingPolicy:
    """Validate an already-decoded policy document (a dict as from YAML or JSON).

    `namespace` is where a TracingPolicyNamespaced without metadata.namespace goes (what
    `kubectl apply -n NS` does); with none given such a policy is an error.
    """
    if not isinstance(doc, dict):
        raise PolicyError(f"policy must be a YAML mapping, got {describe(doc)}")
    # Identify the document first: a Pod or a v1 object should not be reported field by field.
    for key, want in (("apiVersion", API_VERSION), ("kind", None)):
        if key not in doc:
            raise PolicyError(f"{key}: required")
        value = doc[key]
        if want is not None and value != want:
            raise PolicyError(f"{key}: must be {want}, got {describe(value)}")
        if want is None and value not in KINDS:
            raise PolicyError(
                f"{key}: must be TracingPolicy or TracingPolicyNamespaced, got {describe(value)}"
            )
    try:
        policy = TracingPolicy.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError as err:
        raise PolicyError(_render(err.errors()[0])) from None
    return validate(policy, namespace)


def parse_policy(text: str, namespace: str = "") -> TracingPolicy:
    """Parse and validate one TracingPolicy / TracingPolicyNamespaced YAML document.

    `namespace`: default for a TracingPolicyNamespaced that names none (see `policy_from_dict`).
    """
    with _one_line_errors():
        docs = [d for d in _load_documents(text) if d is not None]
        if not docs:
            raise PolicyError("empty policy document")
        if len(docs) > 1:
            raise PolicyError(f"expected a single YAML document, got {len(docs)}")
        return policy_from_dict(docs[0], namespace)


def parse_policies(text: str, namespace: str = "") -> list[TracingPolicy]:
    """Parse every Tetragon policy of a multi-document YAML stream (as given to `kubectl apply`).

    Documents of other API groups (a Pod next to the policy, ...) are skipped; a document with
    apiVersion cilium.io/v1alpha1 (or none) must be a valid policy.
    """
    out = []
    with _one_line_errors():
        docs = _load_documents(text)
    for doc in docs:
        if isinstance(doc, dict) and "apiVersion" in doc and doc["apiVersion"] != API_VERSION:
            continue
        if doc is not None:
            with _one_line_errors():
                out.append(policy_from_dict(doc, namespace))
    return out


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """A value quoted in a message may hold newlines or be huge: replies and logs get one short line."""
    try:
        yield
    except PolicyError as exc:
        text = str(exc)
        line = _shorten(" ".join(text.split()), _MAX_MESSAGE)
        if line == text:
            raise
        raise PolicyError(line, exc.kind) from None
