"""The CustomResourceDefinitions of TracingPolicy and TracingPolicyNamespaced, generated from the model.

The openAPIV3Schema is the JSON schema of `policy.schema.TracingPolicy` (the model the agent validates
with) rewritten to Kubernetes' structural-schema rules: every `$ref` inlined, `Optional[X]` as plain X
(an absent field), a field the model accepts as a number or a string as `x-kubernetes-int-or-string`,
an opaque field as `x-kubernetes-preserve-unknown-fields`, and no `additionalProperties: false` (the API
server prunes unknown fields; the agent then refuses nothing it would have accepted). `metadata` is left
to the API server, as for every custom resource.

`python -m tetragon.k8s.crdgen DIR` writes the two files; tests/unit/test_k8s_crd.py checks that the
committed ones equal this output.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from tetragon.policy.schema import TracingPolicy

GROUP = "cilium.io"
VERSION = "v1alpha1"
# kind -> (plural, singular, short name, scope), as Tetragon's operator installs them.
KINDS = {
    "TracingPolicy": ("tracingpolicies", "tracingpolicy", "tgtp", "Cluster"),
    "TracingPolicyNamespaced": (
        "tracingpoliciesnamespaced",
        "tracingpolicynamespaced",
        "tgtpn",
        "Namespaced",
    ),
}
_DROPPED_KEYS = ("title", "additionalProperties")
_PRESERVE = {"x-kubernetes-preserve-unknown-fields": True}
# Integer bounds the CRD keeps: those of the 32/64-bit integers Tetragon decodes the fields into. A
# narrower limit of this agent's (sizeArgIndex <= 15) is left to its own check, so the API server admits
# every object Tetragon's CRD admits and the agent refuses it with its field path.
_TYPE_BOUNDS = frozenset((0, -(2**31), 2**31 - 1, 2**32 - 1, -(2**63), 2**63 - 1, 2**64 - 1))


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """`node` (a pydantic JSON schema) with refs inlined and rewritten to structural-schema rules."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _structural(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        types = {v.get("type") for v in variants}
        if types == {"integer", "string"}:
            return {"x-kubernetes-int-or-string": True}
        if len(variants) == 1:
            rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
            return _structural({**variants[0], **rest}, defs)
        raise ValueError(f"no structural form for anyOf {node['anyOf']}")
    if not node.get("type") and not node.get("properties"):
        return dict(_PRESERVE)  # typing.Any: kept opaque
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "default" and value is None:
            continue
        if key in ("minimum", "maximum") and value not in _TYPE_BOUNDS:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _structural(value, defs)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out.update(_PRESERVE)
    return out


def open_api_schema() -> dict[str, Any]:
    """The openAPIV3Schema shared by both kinds."""
    model = TracingPolicy.model_json_schema(by_alias=True, mode="validation")
    schema = _structural(model, model.get("$defs", {}))
    schema.pop("$defs", None)
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["status"] = {"type": "object", **_PRESERVE}
    schema["required"] = ["metadata", "spec"]  # apiVersion/kind are the API server's
    return schema


def custom_resource_definition(kind: str) -> dict[str, Any]:
    plural, singular, short, scope = KINDS[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "categories": ["tetragon"],
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "shortNames": [short],
                "singular": singular,
            },
            "scope": scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": open_api_schema()},
                }
            ],
        },
    }


def file_name(kind: str) -> str:
    return f"{GROUP}_{KINDS[kind][0]}.yaml"


def render(kind: str) -> str:
    header = "# Generated by `python -m tetragon.k8s.crdgen` from tetragon.policy.schema: do not edit.\n"
    return header + yaml.safe_dump(custom_resource_definition(kind), sort_keys=True, width=100)


def to_json_schema(node: Any) -> Any:
    """An openAPIV3Schema as a plain JSON schema (int-or-string spelled out), for a JSON-schema validator."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string"):
        return {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    return {key: to_json_schema(value) for key, value in node.items()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m tetragon.k8s.crdgen DIR...", file=sys.stderr)
        return 2
    for directory in args:  # deploy/crds and the chart's crds/
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            (out / file_name(kind)).write_text(render(kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
