"""The TracingPolicy CRDs (deploy/crds/) generated from the agent's model: current, structural, and
accepting Tetragon's example policies (conformance tier) as the model does.

Tetragon's own CRDs are not in the repository nor in $TETRAGON_EXAMPLES (which holds only policies/ and
events/), so these tests check Tetragon's examples against our schema only.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT, conformance_params, tetragon_policy_files
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
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") in crdgen.KINDS]
    assert docs
    for doc in docs:
        errors = [f"{list(e.path)}: {e.message}" for e in _validator(doc["kind"]).iter_errors(doc)]
        assert errors == []


@pytest.mark.parametrize("kind", list(crdgen.KINDS))
def test_crd_is_a_valid_kubernetes_manifest(kind: str) -> None:
    import kubernetes_validate

    from tests.unit.test_deploy_helm import K8S_VERSION

    kubernetes_validate.validate(crdgen.custom_resource_definition(kind), K8S_VERSION, strict=True)
