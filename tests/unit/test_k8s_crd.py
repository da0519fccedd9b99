"""The TracingPolicy CRDs (deploy/crds/) generated from the agent's model: current, structural, and
accepting Tetragon's example policies (conformance tier) as the model does.

Tetragon's own CRDs come from $TETRAGON_K8S_REFERENCE (its `crds/`; .ci/run sets it): every example
validates against theirs and ours, and ours admits what theirs admits, checked over the two schemas
node by node. Without the variable those tests skip with one line; under CI=true they must run.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT, conformance_params, tetragon_k8s_reference, tetragon_policy_files
from tetragon.k8s import crdgen
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import parse_policy

CRDS = ROOT / "deploy" / "crds"
EXAMPLE_FILES = tetragon_policy_files()


@functools.cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    crd = yaml.safe_load((CRDS / crdgen.file_name(kind)).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(crdgen.to_json_schema(schema))


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        found = [(path, node)]
        for key, value in node.items():
            found += _walk(value, f"{path}.{key}")
        return found
    if isinstance(node, list):
        return [hit for i, item in enumerate(node) for hit in _walk(item, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("kind", list(crdgen.KINDS))
def test_committed_crd_is_generated(kind: str) -> None:
    # Re-generate with `python -m tetragon.k8s.crdgen deploy/crds deploy/helm/tetragon/crds` after
    # changing policy/schema.py.
    assert (CRDS / crdgen.file_name(kind)).read_text() == crdgen.render(kind)


def test_the_chart_holds_the_generated_crds() -> None:
    """Helm installs deploy/helm/tetragon/crds/ on the first install: the same files as deploy/crds/
    (`python -m tetragon.k8s.crdgen deploy/crds deploy/helm/tetragon/crds`)."""
    chart_crds = ROOT / "deploy" / "helm" / "tetragon" / "crds"
    assert sorted(p.name for p in chart_crds.iterdir()) == sorted(crdgen.file_name(k) for k in crdgen.KINDS)
    for kind in crdgen.KINDS:
        assert (chart_crds / crdgen.file_name(kind)).read_text() == crdgen.render(kind)


@pytest.mark.parametrize("kind", list(crdgen.KINDS))
def test_crd_is_structural(kind: str) -> None:
    crd = crdgen.custom_resource_definition(kind)
    assert crd["spec"]["scope"] == ("Namespaced" if kind.endswith("Namespaced") else "Cluster")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        where = path or "<root>"
        assert not {"$ref", "$defs", "anyOf", "oneOf", "title"} & node.keys(), where
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, where
        assert node.get("additionalProperties", {}) is not False, where
    assert schema["properties"]["metadata"] == {"type": "object"}
    values = schema["properties"]["spec"]["properties"]["kprobes"]["items"]["properties"]["selectors"]
    match_args = values["items"]["properties"]["matchArgs"]["items"]["properties"]
    assert match_args["values"]["items"] == {"x-kubernetes-int-or-string": True}


def test_schema_and_model_agree_on_types() -> None:
    validator = _validator("TracingPolicy")
    kprobe: dict[str, Any] = {
        "call": "sys_openat",
        "args": [{"index": 0, "type": "int"}],
        "selectors": [{"matchArgs": [{"index": 0, "operator": "Equal", "values": [3, "4"]}]}],
    }
    ok: dict[str, Any] = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "t", "uid": "u-1", "resourceVersion": "7"},
        "spec": {"kprobes": [kprobe]},
    }
    assert list(validator.iter_errors(ok)) == []
    parse_policy(yaml.safe_dump(ok))
    for bad in ({"syscall": "yes"}, {"call": 3}, {"args": [{"index": -1}]}):
        doc = {**ok, "spec": {"kprobes": [{**kprobe, **bad}]}}
        assert list(validator.iter_errors(doc)), bad
        with pytest.raises(PolicyError):
            parse_policy(yaml.safe_dump(doc))


def test_generator_writes_both_files(tmp_path: Path) -> None:
    assert crdgen.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crdgen.file_name(k) for k in crdgen.KINDS)


@pytest.mark.conformance
@pytest.mark.parametrize("path", conformance_params(EXAMPLE_FILES), ids=lambda p: p.name if p else "")
def test_example_validates_against_our_crd(path: Path) -> None:
    for doc in _policy_docs(path):
        assert _errors(_validator(doc["kind"]), doc) == []


def _policy_docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") in crdgen.KINDS]
    assert docs
    return docs


def _errors(validator: jsonschema.Draft4Validator, doc: dict[str, Any]) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("kind", list(crdgen.KINDS))
def test_crd_is_a_valid_kubernetes_manifest(kind: str) -> None:
    import kubernetes_validate

    from tests.unit.test_deploy_helm import K8S_VERSION

    kubernetes_validate.validate(crdgen.custom_resource_definition(kind), K8S_VERSION, strict=True)


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@functools.cache
def _tetragon_crd(kind: str) -> dict[str, Any]:
    return dict(yaml.safe_load(tetragon_k8s_reference("crds", crdgen.file_name(kind)).read_text()))


@functools.cache
def _tetragon_validator(kind: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(crdgen.to_json_schema(_schema(_tetragon_crd(kind))))


@pytest.mark.conformance
@pytest.mark.parametrize("path", conformance_params(EXAMPLE_FILES), ids=lambda p: p.name if p else "")
def test_example_validates_against_tetragons_crd_and_ours(path: Path) -> None:
    """Tetragon's CEL rules (x-kubernetes-validations) are not run here: JSON-schema validation only."""
    for doc in _policy_docs(path):
        theirs, ours = _errors(_tetragon_validator(doc["kind"]), doc), _errors(_validator(doc["kind"]), doc)
        assert (theirs, ours) == ([], [])


# The bounds of the integers Tetragon decodes fields into (its CRD says int32/int64 in `format`, which the
# API server does not check): ours may state them, as they are what Tetragon itself can take.
_WIDTH_BOUNDS = {"int32": {0, -(2**31), 2**31 - 1, 2**32 - 1}, "int64": {0, -(2**63), 2**63 - 1, 2**64 - 1}}


def _stricter(theirs: dict[str, Any], ours: dict[str, Any], path: str) -> list[str]:
    """Where our schema node refuses something Tetragon's admits: a field it lacks, another type, a
    missing enum value, a requirement or bound of its own (a string `format` or `pattern` included)."""
    if ours.get("x-kubernetes-preserve-unknown-fields") and "properties" not in ours:
        return []  # opaque here: admits anything
    found: list[str] = []
    for name, sub in (theirs.get("properties") or {}).items():
        if name not in (ours.get("properties") or {}):
            found.append(f"{path}.{name}: missing")
        else:
            found += _stricter(sub, ours["properties"][name], f"{path}.{name}")
    for key, mark in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(theirs.get(key), dict):
            if not isinstance(ours.get(key), dict):
                found.append(f"{path}{mark}: not described")
            else:
                found += _stricter(theirs[key], ours[key], path + mark)
    if (
        ours.get("type")
        and ours.get("type") != theirs.get("type")
        and not ours.get("x-kubernetes-int-or-string")
    ):
        found.append(f"{path}: type {ours.get('type')}, theirs {theirs.get('type')}")
    if "enum" in ours and not set(theirs.get("enum", [None])) <= set(ours["enum"]):
        found.append(f"{path}: enum lacks {sorted(set(theirs.get('enum', ['(any)'])) - set(ours['enum']))}")
    if set(ours.get("required", [])) - set(theirs.get("required", [])):
        found.append(f"{path}: requires {sorted(set(ours['required']) - set(theirs.get('required', [])))}")
    widths = _WIDTH_BOUNDS.get(theirs.get("format", ""), set())
    for key, tighter in (
        ("maximum", lambda o, t: o < t),
        ("maxItems", lambda o, t: o < t),
        ("maxLength", lambda o, t: o < t),
        ("minimum", lambda o, t: o > t),
        ("minItems", lambda o, t: o > t),
        ("minLength", lambda o, t: o > t),
    ):
        width = key in ("minimum", "maximum") and ours.get(key) in widths
        if key in ours and not width and (key not in theirs or tighter(ours[key], theirs[key])):
            found.append(f"{path}: {key} {ours[key]}, theirs {theirs.get(key)}")
    for key in ("pattern", "format"):
        if key in ours and ours[key] != theirs.get(key) and ours.get("type") == "string":
            found.append(f"{path}: {key} {ours[key]}, theirs {theirs.get(key)}")
    return found


@pytest.mark.conformance
@pytest.mark.parametrize("kind", list(crdgen.KINDS))
def test_our_crd_admits_what_tetragons_admits(kind: str) -> None:
    ours = _schema(yaml.safe_load((CRDS / crdgen.file_name(kind)).read_text()))
    assert _stricter(_schema(_tetragon_crd(kind)), ours, kind) == []
    # and the checker finds what it looks for: a field, an enum value, a bound our schema lacks
    narrowed = json.loads(json.dumps(ours))
    tracepoint = narrowed["properties"]["spec"]["properties"]["tracepoints"]["items"]
    del tracepoint["properties"]["subsystem"]
    tracepoint["properties"]["args"]["items"]["properties"]["sizeArgIndex"]["maximum"] = 15
    found = _stricter(_schema(_tetragon_crd(kind)), narrowed, kind)
    assert f"{kind}.spec.tracepoints[].subsystem: missing" in found
    assert f"{kind}.spec.tracepoints[].args[].sizeArgIndex: maximum 15, theirs None" in found
