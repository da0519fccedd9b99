"""TracingPolicy / TracingPolicyNamespaced (apiVersion cilium.io/v1alpha1): parsing and validation.

`parse_policy(text)` reads one YAML document into a `TracingPolicy` model, strictly like Tetragon's
own decoding: unknown fields, duplicate keys and wrong types are errors; the CRD defaults are applied
(`syscall: true`, arg `type: auto`, capabilities `type: Effective`, `rateLimitScope: thread`, ...);
operator and action spellings are normalised to their canonical names. Every problem is reported as a
one-line `PolicyError` naming the field path, e.g. `spec.kprobes[0].args[1].type: unknown argument
type 'strin'`.

Python attributes are snake_case; the YAML camelCase keys are the pydantic aliases (`return` is
`return_`). Both spellings are accepted when building models by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tetragon.policy.errors import PolicyError
from tetragon.policy.syscalls import all_syscalls, parse_syscall
from tetragon.process.model import CAP_NAMES

API_VERSION = "cilium.io/v1alpha1"
KINDS = ("TracingPolicy", "TracingPolicyNamespaced")

# --- limits (spec §3.5) ---------------------------------------------------------------------------
MAX_SELECTORS = 5
MAX_ARGS = 5  # args + data per hook (EventConfigMaxArgs)
MAX_TAGS = 16
MAX_MESSAGE = 256
MAX_MATCH_PIDS_VALUES = 4
MAX_MATCH_ARGS = 5
MAX_MATCH_VALUES = 4  # numeric comparisons on integer arguments
MAX_PREFIX_LEN = 256
MAX_POSTFIX_LEN = 128
MAX_NAMESPACE_VALUES = 4
MAX_NAMESPACE_ENTRIES = 10
MAX_BINARY_ENTRIES = 1
MAX_ENFORCERS = 1
MAX_SIZE_ARG_INDEX = 15
MAX_RESOLVE_DEPTH = 10

# --- enums ------------------------------------------------------------------------------------------
ARG_TYPES: tuple[str, ...] = tuple(
    [
        "auto",
        "int",
        "sint8",
        "int8",
        "uint8",
        "sint16",
        "int16",
        "uint16",
        "uint32",
        "sint32",
        "int32",
        "ulong",
        "uint64",
        "size_t",
        "long",
        "sint64",
        "int64",
        "char_buf",
        "char_iovec",
        "skb",
        "sock",
        "sockaddr",
        "socket",
        "sockaddr_un",
        "string",
        "fd",
        "file",
        "filename",
        "path",
        "nop",
        "bpf_attr",
        "perf_event",
        "bpf_map",
        "user_namespace",
        "capability",
        "kiocb",
        "iov_iter",
        "cred",
        "const_buf",
        "load_info",
        "module",
        "syscall64",
        "kernel_cap_t",
        "cap_inheritable",
        "cap_permitted",
        "cap_effective",
        "linux_binprm",
        "data_loc",
        "net_device",
        "bpf_cmd",
        "dentry",
        "bpf_prog",
    ]
)
INT_ARG_TYPES = frozenset(
    [
        "auto",
        "int",
        "sint8",
        "int8",
        "uint8",
        "sint16",
        "int16",
        "uint16",
        "uint32",
        "sint32",
        "int32",
        "ulong",
        "uint64",
        "size_t",
        "long",
        "sint64",
        "int64",
        "fd",
        "syscall64",
        "kernel_cap_t",
        "cap_inheritable",
        "cap_permitted",
        "cap_effective",
        "bpf_cmd",
    ]
)

# matchArgs / matchData / matchReturnArgs operator -> kernel op number (canonical names only).
OPERATOR_IDS: dict[str, int] = {
    "GT": 1,
    "LT": 2,
    "Equal": 3,
    "NotEqual": 4,
    "In": 5,
    "NotIn": 6,
    "Prefix": 8,
    "Postfix": 9,
    "InMap": 10,
    "NotInMap": 11,
    "Mask": 12,
    "SAddr": 13,
    "DAddr": 14,
    "SPort": 15,
    "DPort": 16,
    "Protocol": 17,
    "NotSPort": 18,
    "NotDPort": 19,
    "SPortPriv": 20,
    "NotSPortPriv": 21,
    "DPortPriv": 22,
    "NotDPortPriv": 23,
    "NotSAddr": 24,
    "NotDAddr": 25,
    "NotPrefix": 26,
    "NotPostfix": 27,
    "Family": 28,
    "State": 29,
    "CapabilitiesGained": 30,
    "InRange": 31,
    "NotInRange": 32,
    "SubString": 33,
    "SubStringIgnCase": 34,
    "CelExpr": 35,
    "FileType": 36,
    "NotFileType": 37,
}
OPERATOR_ALIASES: dict[str, str] = {
    **{name: name for name in OPERATOR_IDS},
    "GreaterThan": "GT",
    "gt": "GT",
    "LessThan": "LT",
    "lt": "LT",
    "eq": "Equal",
    "neq": "NotEqual",
    "NotSportPriv": "NotSPortPriv",
}
# Action -> kernel action id.
ACTION_IDS: dict[str, int] = {
    "Post": 0,
    "FollowFD": 1,
    "Sigkill": 2,
    "UnfollowFD": 3,
    "Override": 4,
    "CopyFD": 5,
    "GetUrl": 6,
    "DnsLookup": 7,
    "NoPost": 8,
    "Signal": 9,
    "TrackSock": 10,
    "UntrackSock": 11,
    "NotifyEnforcer": 12,
    "CleanupEnforcerNotification": 13,
    "Set": 14,
}
_ACTIONS_LOWER = {name.lower(): name for name in ACTION_IDS}
NAMESPACES = (
    "Uts",
    "Ipc",
    "Mnt",
    "Pid",
    "PidForChildren",
    "Net",
    "Time",
    "TimeForChildren",
    "Cgroup",
    "User",
)
_NAMESPACES_LOWER = {name.lower(): name for name in NAMESPACES}
# capability name -> bit, from the same table the events use (there bit 1 keeps Tetragon's
# "DAC_OVERRIDE" spelling; policies spell it CAP_DAC_OVERRIDE)
CAPABILITIES: dict[str, int] = {
    ("CAP_DAC_OVERRIDE" if name == "DAC_OVERRIDE" else name): bit for bit, name in enumerate(CAP_NAMES)
}
BINARY_OPERATORS = ("In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix")
LIST_TYPES = ("syscalls", "generated_syscalls", "generated_ftrace")
POLICY_MODES = ("enforce", "monitor")
LIST_PREFIX = "list:"
_RATE_LIMIT = re.compile(r"^(\d+)([smhSMH]?)$")


# --- field validators -------------------------------------------------------------------------------
def _fail(template: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError("policy", template, ctx)


def _one_of(what: str, allowed: Iterable[str]) -> Callable[[str], str]:
    choices = tuple(allowed)

    def check(value: str) -> str:
        if value not in choices:
            raise _fail(
                "unknown {what} '{value}' (one of: {choices})",
                what=what,
                value=value,
                choices=", ".join(choices),
            )
        return value

    return check


def _canonical(what: str, table: dict[str, str], show: Iterable[str]) -> Callable[[str], str]:
    shown = ", ".join(show)

    def check(value: str) -> str:
        canon = table.get(value)
        if canon is None:
            raise _fail("unknown {what} '{value}' (one of: {choices})", what=what, value=value, choices=shown)
        return canon

    return check


def _arg_type(value: str) -> str:
    if value not in ARG_TYPES:
        raise _fail("unknown argument type '{value}'", value=value)
    return value


def _action(value: str) -> str:
    canon = _ACTIONS_LOWER.get(value.lower())
    if canon is None:
        raise _fail(
            "unknown action '{value}' (one of: {choices})", value=value, choices=", ".join(ACTION_IDS)
        )
    return canon


def _capability(value: str) -> str:
    name = value.upper()
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAPABILITIES:
        raise _fail("unknown capability '{value}'", value=value)
    return name


def _namespace_change(value: str) -> str:
    canon = _NAMESPACES_LOWER.get(value.lower())
    if canon is None:
        raise _fail(
            "unknown namespace '{value}' (one of: {choices})", value=value, choices=", ".join(NAMESPACES)
        )
    return canon


def _rate_limit(value: str) -> str:
    if not _RATE_LIMIT.match(value):
        raise _fail(
            "invalid rate limit '{value}' (want a number with optional s, m or h suffix)", value=value
        )
    return value


def _int_to_str(value: Any) -> Any:
    """YAML match values may be written as numbers; Tetragon's schema keeps them as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
I32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
MatchValue = Annotated[str, BeforeValidator(_int_to_str)]
ArgType = Annotated[str, AfterValidator(_arg_type)]
ArgOperator = Annotated[
    str, AfterValidator(_canonical("operator", OPERATOR_ALIASES, [*OPERATOR_IDS, "NotSportPriv"]))
]
InNotIn = Annotated[str, AfterValidator(_one_of("operator", ("In", "NotIn")))]
ActionName = Annotated[str, AfterValidator(_action)]
Capability = Annotated[str, AfterValidator(_capability)]


def _camel(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part.title() for part in rest)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=_camel,
        extra="forbid",
        strict=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        # A YAML key with no value (`selectors:`) means "not set", as in Go's decoding.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# --- label selectors ----------------------------------------------------------------------------------
class LabelSelectorRequirement(_Model):
    key: str
    operator: Annotated[str, AfterValidator(_one_of("operator", ("In", "NotIn", "Exists", "DoesNotExist")))]
    values: list[str] = Field(default_factory=list)


class LabelSelector(_Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


class WorkloadSelector(_Model):
    pod_selector: LabelSelector | None = None
    container_selector: LabelSelector | None = None
    host_selector: LabelSelector | None = None


# --- selectors ----------------------------------------------------------------------------------------
class ArgSelector(_Model):
    index: U32 | None = None  # function argument position (kprobe) / format field position (tracepoint)
    args: list[U32] = Field(default_factory=list)  # positions in the hook's `args` list (wins over index)
    operator: ArgOperator
    values: list[MatchValue] = Field(default_factory=list)


class PIDSelector(_Model):
    operator: InNotIn
    values: list[U32] = Field(default_factory=list)
    is_namespace_pid: bool = Field(False, alias="isNamespacePID")
    follow_forks: bool = False


class BinarySelector(_Model):
    operator: Annotated[str, AfterValidator(_one_of("operator", BINARY_OPERATORS))]
    values: list[str] = Field(default_factory=list)
    follow_children: bool = False


class NamespaceSelector(_Model):
    namespace: Annotated[str, AfterValidator(_one_of("namespace", NAMESPACES))]
    operator: InNotIn
    values: list[MatchValue] = Field(default_factory=list)


class NamespaceChangesSelector(_Model):
    operator: InNotIn
    values: list[Annotated[str, AfterValidator(_namespace_change)]] = Field(default_factory=list)


class CapabilitiesSelector(_Model):
    type: Annotated[
        str, AfterValidator(_one_of("capability type", ("Effective", "Inheritable", "Permitted")))
    ] = "Effective"
    operator: InNotIn
    is_namespace_capability: bool = False
    values: list[Capability] = Field(default_factory=list)


class ActionSelector(_Model):
    action: ActionName
    arg_fd: U32 = 0
    arg_name: U32 = 0
    arg_url: str = ""
    arg_fqdn: str = ""
    arg_error: I32 = 0
    arg_sig: U32 = 0
    arg_sock: U32 = 0
    rate_limit: Annotated[str, AfterValidator(_rate_limit)] = ""
    rate_limit_scope: Annotated[
        str, AfterValidator(_one_of("rateLimitScope", ("thread", "process", "global")))
    ] = "thread"
    kernel_stack_trace: bool = False
    user_stack_trace: bool = False
    ima_hash: bool = False
    arg_index: U32 = 0
    arg_value: U32 = 0
    # uprobe Override
    arg_regs: list[str] = Field(default_factory=list)
    arg_new_symbol: str = ""
    arg_new_addr: U64 = 0
    arg_new_offset: U64 = 0


class Selector(_Model):
    """KProbeSelector: filters are ANDed inside a selector; selectors of a hook are ORed."""

    match_args: list[ArgSelector] = Field(default_factory=list)
    match_data: list[ArgSelector] = Field(default_factory=list)
    match_return_args: list[ArgSelector] = Field(default_factory=list)
    match_pids: list[PIDSelector] = Field(default_factory=list, alias="matchPIDs")
    match_binaries: list[BinarySelector] = Field(default_factory=list)
    match_parent_binaries: list[BinarySelector] = Field(default_factory=list)
    match_namespaces: list[NamespaceSelector] = Field(default_factory=list)
    match_namespace_changes: list[NamespaceChangesSelector] = Field(default_factory=list)
    match_capabilities: list[CapabilitiesSelector] = Field(default_factory=list)
    match_capability_changes: list[CapabilitiesSelector] = Field(default_factory=list)
    match_workloads: list[WorkloadSelector] = Field(default_factory=list)
    match_actions: list[ActionSelector] = Field(default_factory=list)
    match_return_actions: list[ActionSelector] = Field(default_factory=list)
    label: str = ""
    macros: list[str] = Field(default_factory=list)


# --- hooks --------------------------------------------------------------------------------------------
class KProbeArg(_Model):
    index: U32
    type: ArgType = "auto"
    resolve: str = ""
    size_arg_index: Annotated[int, Field(ge=0, le=MAX_SIZE_ARG_INDEX)] = 0  # 1-based; 0 = unset
    return_copy: bool = False
    max_data: bool = False
    label: str = ""
    source: Annotated[str, AfterValidator(_one_of("source", ("", "current_task", "pt_regs")))] = ""
    btf_type: str = ""
    btf_type_module: str = ""


class KProbeIgnore(_Model):
    call_not_found: bool = False


class UProbeIgnore(_Model):
    digest_verification_failure: bool = False


class _Hook(_Model):
    message: str = ""
    args: list[KProbeArg] = Field(default_factory=list)
    selectors: list[Selector] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class KProbeSpec(_Hook):
    call: str
    syscall: bool = True
    return_: bool = Field(False, alias="return")
    data: list[KProbeArg] = Field(default_factory=list)
    return_arg: KProbeArg | None = None
    return_arg_action: Annotated[
        str, AfterValidator(_one_of("returnArgAction", ("", "Post", "TrackSock", "UntrackSock")))
    ] = ""
    ignore: KProbeIgnore | None = None


class TracepointSpec(_Hook):
    subsystem: str
    event: str
    raw: bool = False


class UProbeSpec(_Hook):
    path: str
    symbols: list[str] = Field(default_factory=list)
    offsets: list[U64] = Field(default_factory=list)
    addrs: list[U64] = Field(default_factory=list)
    ref_ctr_offsets: list[U64] = Field(default_factory=list)
    btf_path: str = ""
    data: list[KProbeArg] = Field(default_factory=list)
    return_: bool = Field(False, alias="return")
    return_arg: KProbeArg | None = None
    binary_digests: list[str] = Field(default_factory=list)
    ignore: UProbeIgnore | None = None


class LsmHookSpec(_Hook):
    hook: str


class UsdtSpec(_Hook):
    path: str
    btf_path: str = ""
    provider: str
    name: str


# --- spec / policy --------------------------------------------------------------------------------------
class ListSpec(_Model):
    name: str
    type: Annotated[str, AfterValidator(_one_of("list type", ("", *LIST_TYPES)))] = ""
    values: list[str] = Field(default_factory=list)
    pattern: str | None = None
    validated: bool = False


class EnforcerSpec(_Model):
    calls: list[str] = Field(default_factory=list)


class OptionSpec(_Model):
    name: str
    value: str = ""


class PolicySpec(_Model):
    kprobes: list[KProbeSpec] = Field(default_factory=list)
    tracepoints: list[TracepointSpec] = Field(default_factory=list)
    uprobes: list[UProbeSpec] = Field(default_factory=list)
    lsmhooks: list[LsmHookSpec] = Field(default_factory=list)
    usdts: list[UsdtSpec] = Field(default_factory=list)
    fentries: list[KProbeSpec] = Field(default_factory=list)
    lists: list[ListSpec] = Field(default_factory=list)
    enforcers: list[EnforcerSpec] = Field(default_factory=list)
    options: list[OptionSpec] = Field(default_factory=list)
    loader: bool = False
    pod_selector: LabelSelector | None = None
    container_selector: LabelSelector | None = None
    host_selector: LabelSelector | None = None
    node_selector: LabelSelector | None = None
    selectors_macros: dict[str, Selector] = Field(default_factory=dict)


class Metadata(_Model):
    name: str
    namespace: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Kubernetes-managed ObjectMeta fields (present in `kubectl get -o yaml` output); kept opaque.
    uid: Any = None
    resource_version: Any = None
    generation: Any = None
    creation_timestamp: Any = None
    generate_name: Any = None
    managed_fields: Any = None
    finalizers: Any = None
    owner_references: Any = None
    deletion_timestamp: Any = None
    deletion_grace_period_seconds: Any = None
    self_link: Any = None


class TracingPolicy(_Model):
    api_version: str
    kind: str
    metadata: Metadata
    spec: PolicySpec
    status: Any = None  # written by Kubernetes, ignored

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def namespaced(self) -> bool:
        return self.kind == "TracingPolicyNamespaced"


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


def _describe(value: Any) -> str:
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
        msg = f"expected {_EXPECTED[typ]}, got {_describe(err.get('input'))}"
    elif typ == "greater_than_equal":
        msg = f"must be >= {ctx.get('ge')}, got {err.get('input')}"
    elif typ == "less_than_equal":
        msg = f"must be <= {ctx.get('le')}, got {err.get('input')}"
    else:
        msg = err["msg"]
    return f"{where}: {msg}" if where else msg


# --- semantic checks ----------------------------------------------------------------------------------
class _Checker:
    def __init__(self, policy: TracingPolicy) -> None:
        self.p = policy
        self.lists = {lst.name for lst in policy.spec.lists}

    @staticmethod
    def fail(path: str, msg: str) -> PolicyError:
        return PolicyError(f"{path}: {msg}")

    def run(self) -> None:
        p = self.p
        if p.api_version != API_VERSION:
            raise self.fail("apiVersion", f"must be {API_VERSION}, got {_describe(p.api_version)}")
        if p.kind not in KINDS:
            raise self.fail(
                "kind", f"must be TracingPolicy or TracingPolicyNamespaced, got {_describe(p.kind)}"
            )
        self.check_metadata()
        spec = p.spec
        self.check_lists()
        if len(spec.enforcers) > MAX_ENFORCERS:
            raise self.fail(
                "spec.enforcers", f"at most {MAX_ENFORCERS} enforcer allowed, got {len(spec.enforcers)}"
            )
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
        for section in ("kprobes", "fentries", "tracepoints", "uprobes", "lsmhooks", "usdts"):
            for i, hook in enumerate(getattr(spec, section)):
                self.check_hook(f"spec.{section}[{i}]", hook, section)

    def check_metadata(self) -> None:
        md = self.p.metadata
        if not md.name:
            raise self.fail("metadata.name", "required")
        if len(md.name) > 253 or re.search(r"[\s/]", md.name):
            raise self.fail("metadata.name", f"invalid name '{md.name}' (no '/' or whitespace, ≤253 chars)")
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

    def check_hook(self, path: str, hook: _Hook, section: str) -> None:
        if len(hook.message) > MAX_MESSAGE:
            raise self.fail(f"{path}.message", f"longer than {MAX_MESSAGE} characters ({len(hook.message)})")
        if len(hook.tags) > MAX_TAGS:
            raise self.fail(f"{path}.tags", f"at most {MAX_TAGS} tags allowed, got {len(hook.tags)}")
        if len(hook.selectors) > MAX_SELECTORS:
            raise self.fail(
                f"{path}.selectors", f"at most {MAX_SELECTORS} selectors allowed, got {len(hook.selectors)}"
            )
        data: list[KProbeArg] = getattr(hook, "data", [])
        if len(hook.args) + len(data) > MAX_ARGS:
            raise self.fail(
                f"{path}.args", f"at most {MAX_ARGS} args+data allowed, got {len(hook.args) + len(data)}"
            )
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
        for k, sel in enumerate(hook.selectors):
            self.check_selector(f"{path}.selectors[{k}]", sel, hook, section)

    def check_arg(self, path: str, arg: KProbeArg) -> None:
        if arg.size_arg_index and arg.type not in ("char_buf", "char_iovec"):
            raise self.fail(f"{path}.sizeArgIndex", "only valid for char_buf and char_iovec arguments")
        if arg.resolve and len(arg.resolve.split(".")) > MAX_RESOLVE_DEPTH:
            raise self.fail(f"{path}.resolve", f"deeper than {MAX_RESOLVE_DEPTH} fields")

    def check_selector(self, path: str, sel: Selector, hook: _Hook | None, section: str) -> None:
        for m, macro in enumerate(sel.macros):
            if macro not in self.p.spec.selectors_macros:
                raise self.fail(f"{path}.macros[{m}]", f"unknown selector macro '{macro}'")
        if len(sel.match_args) > MAX_MATCH_ARGS:
            raise self.fail(
                f"{path}.matchArgs", f"at most {MAX_MATCH_ARGS} entries allowed, got {len(sel.match_args)}"
            )
        data: list[KProbeArg] = getattr(hook, "data", []) if hook is not None else []
        for field, entries, args in (
            ("matchArgs", sel.match_args, hook.args if hook is not None else None),
            ("matchData", sel.match_data, data if hook is not None else None),
            ("matchReturnArgs", sel.match_return_args, None),
        ):
            for q, entry in enumerate(entries):
                self.check_arg_selector(f"{path}.{field}[{q}]", entry, args, field, section == "tracepoints")
        for q, pids in enumerate(sel.match_pids):
            if len(pids.values) > MAX_MATCH_PIDS_VALUES:
                raise self.fail(
                    f"{path}.matchPIDs[{q}].values",
                    f"at most {MAX_MATCH_PIDS_VALUES} values allowed, got {len(pids.values)}",
                )
        for field, bins in (
            ("matchBinaries", sel.match_binaries),
            ("matchParentBinaries", sel.match_parent_binaries),
        ):
            if len(bins) > MAX_BINARY_ENTRIES:
                raise self.fail(
                    f"{path}.{field}", f"at most {MAX_BINARY_ENTRIES} entry allowed, got {len(bins)}"
                )
        if len(sel.match_namespaces) > MAX_NAMESPACE_ENTRIES:
            raise self.fail(
                f"{path}.matchNamespaces",
                f"at most {MAX_NAMESPACE_ENTRIES} entries allowed, got {len(sel.match_namespaces)}",
            )
        for q, ns in enumerate(sel.match_namespaces):
            if len(ns.values) > MAX_NAMESPACE_VALUES:
                raise self.fail(
                    f"{path}.matchNamespaces[{q}].values",
                    f"at most {MAX_NAMESPACE_VALUES} values allowed, got {len(ns.values)}",
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


# --- public API ---------------------------------------------------------------------------------------
def policy_from_dict(doc: Any, namespace: str = "") -> TracingPolicy:
    """Validate an already-decoded policy document (a dict as from YAML or JSON).

    `namespace` is where a TracingPolicyNamespaced without metadata.namespace goes (what
    `kubectl apply -n NS` does); with none given such a policy is an error.
    """
    if not isinstance(doc, dict):
        raise PolicyError(f"policy must be a YAML mapping, got {_describe(doc)}")
    # Identify the document first: a Pod or a v1 object should not be reported field by field.
    for key, want in (("apiVersion", API_VERSION), ("kind", None)):
        if key not in doc:
            raise PolicyError(f"{key}: required")
        value = doc[key]
        if want is not None and value != want:
            raise PolicyError(f"{key}: must be {want}, got {_describe(value)}")
        if want is None and value not in KINDS:
            raise PolicyError(
                f"{key}: must be TracingPolicy or TracingPolicyNamespaced, got {_describe(value)}"
            )
    try:
        policy = TracingPolicy.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError as err:
        raise PolicyError(_render(err.errors()[0])) from None
    if policy.namespaced and not policy.metadata.namespace:
        policy.metadata.namespace = namespace
    _Checker(policy).run()
    return policy


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


def option(p: TracingPolicy, name: str) -> str | None:
    """Value of spec.options entry `name` (the last one wins), or None."""
    value = None
    for opt in p.spec.options:
        if opt.name == name:
            value = opt.value
    return value


def policy_mode(p: TracingPolicy) -> str:
    """ "enforce" (default) or "monitor", from the `policy-mode` option."""
    mode = option(p, "policy-mode")
    if mode is None or mode == "":
        return "enforce"
    if mode not in POLICY_MODES:
        raise PolicyError(f"invalid policy-mode '{mode}' (want enforce or monitor)")
    return mode


def find_list(p: TracingPolicy, name: str) -> ListSpec:
    """The ListSpec named `name` (a leading `list:` is accepted)."""
    if name.startswith(LIST_PREFIX):
        name = name[len(LIST_PREFIX) :]
    for lst in p.spec.lists:
        if lst.name == name:
            return lst
    raise PolicyError(f"unknown list '{name}'")


def resolve_list(p: TracingPolicy, name: str) -> list[str]:
    """The entries of list `name` (a leading `list:` is accepted).

    * `syscalls` and untyped lists: the values as written (`sys_dup`, `__ia32_sys_dup`, ...);
    * `generated_syscalls`: every x64 syscall as `sys_<name>`, by number;
    * `generated_ftrace`: `[pattern]` -- the regular expression over available_filter_functions is
      not expanded here; callers check `find_list(p, name).type` and expand it against the kernel.
    """
    lst = find_list(p, name)
    if lst.type == "generated_syscalls":
        return [f"sys_{sc}" for sc in all_syscalls("x64")]
    if lst.type == "generated_ftrace":
        return [lst.pattern or ""]
    return list(lst.values)


def rate_limit_seconds(value: str) -> int:
    """Seconds of an ActionSelector rateLimit (`5` = 5s, `1m`, `2h`); 0 when unset."""
    if not value:
        return 0
    m = _RATE_LIMIT.match(value)
    if m is None:
        raise PolicyError(f"invalid rate limit '{value}'")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2).lower()]


def iter_hooks(p: TracingPolicy) -> Iterable[tuple[str, int, _Hook]]:
    """(section, index, hook) for every hook of the policy, in spec order of sections."""
    for section in ("kprobes", "fentries", "tracepoints", "uprobes", "lsmhooks", "usdts"):
        for i, hook in enumerate(getattr(p.spec, section)):
            yield section, i, hook
