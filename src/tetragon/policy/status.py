"""What the policy manager reports about one loaded policy (gRPC TracingPolicyStatus)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PolicyStatus:
    id: int
    name: str
    namespace: str = ""
    info: str = ""
    sensors: list[str] = field(default_factory=list)
    enabled: bool = True
    state: str = "TP_STATE_ENABLED"  # TracingPolicyState enum name
    error: str = ""
    mode: str = "TP_MODE_ENFORCE"  # TracingPolicyMode enum name
    kernel_memory_bytes: int = 0
    domain: str = ""  # "grpc" or "static" (file, dir)
    filter_id: int = 0  # the policy filter's id of a pod-scoped policy (its id); 0: not scoped
    npost: int = 0  # events posted
    nenforce: int = 0  # enforcement actions carried out
    nmonitor: int = 0  # enforcement actions skipped in monitor mode
    # kernel counters of the policy's hooks (generic_cfg.h GSTAT_* slots, summed); None while not loaded
    counters: list[int] | None = None
