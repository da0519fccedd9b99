"""Python view of bpf/include/generic/podfilter.h's #defines (tests/unit/test_k8s_policyfilter.py
checks they agree)."""

from __future__ import annotations

# a `policy_cgroups` value: a pod's cgroup the policy does not select (hostSelector policies only)
POD_FILTER_IN_POD = 0
POD_FILTER_MAX_DEPTH = 16
