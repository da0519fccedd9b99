"""YAML text -> TracingPolicy: strict decoding, every error one line naming its field path.

`parse_policy(text)` reads one YAML document, decodes it into the schema's model (unknown fields,
duplicate keys and wrong types are errors, e.g. `spec.kprobes[0].args[1].type: unknown argument
type 'strin'`) and hands it to `policy.validate` for the checks that span several fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import ValidationError

from tetragon.policy.errors import PolicyError
from tetragon.policy.names import API_VERSION, KINDS
from tetragon.policy.schema import TracingPolicy
from tetragon.policy.validate import describe, validate


# --- YAML loading -------------------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (Tetragon decodes strictly)."""


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


def _yaml_error(err: yaml.YAMLError) -> PolicyError:
    if isinstance(err, yaml.MarkedYAMLError):
        problem = err.problem or err.context or "syntax error"
        mark = err.problem_mark or err.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return PolicyError(f"invalid YAML: {problem}{where}")
    return PolicyError(f"invalid YAML: {' '.join(str(err).split())}")


def _load_documents(text: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_StrictLoader))  # a SafeLoader subclass
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
        msg = f"must be >= {ctx.get('ge')}, got {err.get('input')}"
    elif typ == "less_than_equal":
        msg = f"must be <= {ctx.get('le')}, got {err.get('input')}"
    else:
        msg = err["msg"]
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
    for doc in _load_documents(text):
        if isinstance(doc, dict) and "apiVersion" in doc and doc["apiVersion"] != API_VERSION:
            continue
        if doc is not None:
            out.append(policy_from_dict(doc, namespace))
    return out
