"""TracingPolicy / TracingPolicyNamespaced (apiVersion cilium.io/v1alpha1) as pydantic models.

The models decode strictly, like Tetragon: unknown fields and wrong types are errors; the CRD defaults
are applied (`syscall: true`, arg `type: auto`, capabilities `type: Effective`, `rateLimitScope:
thread`, ...); operator and action spellings are normalised to their canonical names. Reading YAML
is `policy.load`'s job, cross-field checks are `policy.validate`'s.

Python attributes are snake_case; the YAML camelCase keys are the pydantic aliases (`return` is
`return_`). Both spellings are accepted when building models by hand.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tetragon.policy.errors import PolicyError
from tetragon.policy.fields import (
    I32,
    U32,
    U64,
    ActionName,
    ArgOperator,
    ArgType,
    Capability,
    InNotIn,
    MatchValue,
    NamespaceChange,
    RateLimit,
    one_of,
    rate_limit_seconds,
)
from tetragon.policy.names import (
    BINARY_OPERATORS,
    CAPABILITY_TYPES,
    LIST_PREFIX,
    LIST_TYPES,
    MAX_SIZE_ARG_INDEX,
    NAMESPACES,
    POLICY_MODES,
)
from tetragon.policy.syscalls import all_syscalls


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
    operator: Annotated[str, AfterValidator(one_of("operator", ("In", "NotIn", "Exists", "DoesNotExist")))]
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
    operator: Annotated[str, AfterValidator(one_of("operator", BINARY_OPERATORS))]
    values: list[str] = Field(default_factory=list)
    follow_children: bool = False


class NamespaceSelector(_Model):
    namespace: Annotated[str, AfterValidator(one_of("namespace", NAMESPACES))]
    operator: InNotIn
    values: list[MatchValue] = Field(default_factory=list)


class NamespaceChangesSelector(_Model):
    operator: InNotIn
    values: list[NamespaceChange] = Field(default_factory=list)


class CapabilitiesSelector(_Model):
    type: Annotated[str, AfterValidator(one_of("capability type", CAPABILITY_TYPES))] = "Effective"
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
    rate_limit: RateLimit = ""
    rate_limit_scope: Annotated[
        str, AfterValidator(one_of("rateLimitScope", ("thread", "process", "global")))
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

    @property
    def rate_limit_ns(self) -> int:
        return rate_limit_seconds(self.rate_limit) * 1_000_000_000


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
    match_workloads: WorkloadSelector | None = None  # an object, as in Tetragon's CRD
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
    source: Annotated[str, AfterValidator(one_of("source", ("", "current_task", "pt_regs")))] = ""
    btf_type: str = ""
    btf_type_module: str = ""


class KProbeIgnore(_Model):
    call_not_found: bool = False


class UProbeIgnore(_Model):
    digest_verification_failure: bool = False


class Hook(_Model):
    message: str = ""
    args: list[KProbeArg] = Field(default_factory=list)
    selectors: list[Selector] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class KProbeSpec(Hook):
    call: str
    syscall: bool = True
    return_: bool = Field(False, alias="return")
    data: list[KProbeArg] = Field(default_factory=list)
    return_arg: KProbeArg | None = None
    return_arg_action: Annotated[
        str, AfterValidator(one_of("returnArgAction", ("", "Post", "TrackSock", "UntrackSock")))
    ] = ""
    ignore: KProbeIgnore | None = None


class TracepointSpec(Hook):
    subsystem: str
    event: str
    raw: bool = False


class UProbeSpec(Hook):
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


class LsmHookSpec(Hook):
    hook: str


class UsdtSpec(Hook):
    path: str
    btf_path: str = ""
    provider: str
    name: str


# --- spec / policy --------------------------------------------------------------------------------------
class ListSpec(_Model):
    name: str
    type: Annotated[str, AfterValidator(one_of("list type", ("", *LIST_TYPES)))] = ""
    values: list[str] = Field(default_factory=list)
    pattern: str | None = None
    validated: bool = False

    @property
    def entries(self) -> list[str]:
        """What the list stands for.

        * `syscalls` and untyped lists: the values as written (`sys_dup`, `__ia32_sys_dup`, ...);
        * `generated_syscalls`: every x64 syscall as `sys_<name>`, by number;
        * `generated_ftrace`: `[pattern]` -- the regular expression over available_filter_functions is
          not expanded here; callers check `type` and expand it against the kernel.
        """
        if self.type == "generated_syscalls":
            return [f"sys_{sc}" for sc in all_syscalls("x64")]
        if self.type == "generated_ftrace":
            return [self.pattern or ""]
        return list(self.values)


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


# --- queries -------------------------------------------------------------------------------------------
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
    """The entries of list `name` (a leading `list:` is accepted): see ListSpec.entries."""
    return find_list(p, name).entries
