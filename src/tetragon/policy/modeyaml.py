"""Rewrite a TracingPolicy's `policy-mode` option (`tetra tracingpolicy add/modify --mode`).

Tetragon's PolicyYAMLSetMode drops every `spec.options` entry named `policy-mode` and appends
`{name: policy-mode, value: MODE}`. The edit here works on the YAML node tree rather than on loaded
Python values, so every other scalar is written back with its original text and quoting style
(`0777` stays `0777`, `"1"` stays a string); comments are not kept.
"""

from __future__ import annotations

import yaml

from tetragon.policy.names import POLICY_MODES

__all__ = ["POLICY_MODES", "set_policy_mode"]

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


def set_policy_mode(yaml_text: str, mode: str) -> str:
    """The policy with `spec.options` policy-mode set to `mode`; ValueError on bad input.

    An empty `mode` only normalises the document (what `tetra tp modify` prints without `-m`).
    """
    if mode not in ("", *POLICY_MODES):
        raise ValueError(f'invalid mode: "{mode}" (expected enforce or monitor)')
    try:
        documents = [doc for doc in yaml.compose_all(yaml_text, Loader=yaml.SafeLoader) if doc is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {_one_line(exc)}") from None
    if not documents:
        raise ValueError("empty policy")
    if len(documents) > 1:
        raise ValueError("expected one YAML document, found several")
    root = documents[0]
    if not isinstance(root, yaml.MappingNode):
        raise ValueError("policy is not a YAML mapping")
    if mode:
        _set_mode(root, mode)
    text: str = yaml.serialize(root, Dumper=yaml.SafeDumper, allow_unicode=True)
    return text


def _set_mode(root: yaml.MappingNode, mode: str) -> None:
    spec = _get(root, "spec")
    if spec is None:
        raise ValueError("yaml does not include spec section")
    if _is_null(spec):  # `spec:` with nothing under it
        spec = yaml.MappingNode(_MAP, [], flow_style=False)
        _put(root, "spec", spec)
    if not isinstance(spec, yaml.MappingNode):
        raise ValueError("spec is not a mapping")
    entry = yaml.MappingNode(
        _MAP,
        [
            (_scalar("name"), _scalar("policy-mode")),
            (_scalar("value"), _scalar(mode)),
        ],
        flow_style=False,
    )
    options = _get(spec, "options")
    if options is None or _is_null(options):
        _put(spec, "options", yaml.SequenceNode(_SEQ, [entry], flow_style=False))
        return
    if not isinstance(options, yaml.SequenceNode):
        raise ValueError("spec.options is not a list")
    kept = []
    for index, option in enumerate(options.value):
        if not isinstance(option, yaml.MappingNode):
            raise ValueError(f"spec.options[{index}] is not a mapping")
        name = _get(option, "name")
        if not (isinstance(name, yaml.ScalarNode) and name.value == "policy-mode"):
            kept.append(option)
    options.value = [*kept, entry]
    options.flow_style = False  # a block list even if it was written `[]`


def _scalar(value: str) -> yaml.ScalarNode:
    return yaml.ScalarNode(_STR, value)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _get(mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v  # type: ignore[no-any-return]
    return None


def _put(mapping: yaml.MappingNode, key: str, value: yaml.Node) -> None:
    for index, (k, _) in enumerate(mapping.value):
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            mapping.value[index] = (k, value)
            return
    mapping.value.append((_scalar(key), value))


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
