"""Scrape-time values the agent's parts hold: ring-buffer counters and policy states."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tetragon.abi import events_h as L
from tetragon.abi import generic_cfg_h as G

if TYPE_CHECKING:
    from tetragon.sensors.base import BaseSensor
    from tetragon.sensors.manager import PolicyManager

# per record op, the tg_stats slot counting the records the kernel could not reserve ring space for
RING_LOSSES = (
    (L.MSG_OP_EXECVE, L.STAT_EXEC_LOST),
    (L.MSG_OP_EXIT, L.STAT_EXIT_LOST),
    (L.MSG_OP_CLONE, L.STAT_CLONE_LOST),
    (L.MSG_OP_GENERIC_KPROBE, L.STAT_GENERIC_LOST),
)


def ring_values(sensor: BaseSensor | None) -> dict[str, Any]:
    stats = sensor.stats() if sensor is not None else {}
    reader = sensor.reader if sensor is not None else None
    return {
        "ringbuf_received": reader.received if reader is not None else 0,
        "ringbuf_lost": sum(stats.get(stat, 0) for _, stat in RING_LOSSES),
        # bpf_ringbuf_output() fails with EAGAIN when the ring has no room
        "bpf_missed": {str(op): {"EAGAIN": stats.get(stat, 0)} for op, stat in RING_LOSSES},
        # failures the base sensor's programs counted on tg_execve_map, Tetragon's execve_map
        "tetragon_map_errors_update_total": {"execve_map": stats.get(L.STAT_EXECVE_MAP_UPDATE_ERR, 0)},
        "tetragon_map_errors_delete_total": {"execve_map": stats.get(L.STAT_EXECVE_MAP_DELETE_ERR, 0)},
    }


def policy_values(policies: PolicyManager | None) -> dict[str, Any]:
    if policies is None:
        return {}
    states: dict[str, int] = {"enabled": 0, "disabled": 0, "load_error": 0, "error": 0}
    memory: dict[tuple[str, str], int] = {}
    lost: dict[tuple[str, str], int] = {}
    for st in policies.list():
        state = st.state.removeprefix("TP_STATE_").lower()
        states[state] = states.get(state, 0) + 1
        memory[(st.name, st.namespace)] = st.kernel_memory_bytes
        if st.counters is not None:  # loaded: its hooks' kernel counters
            lost[(st.name, st.namespace)] = st.counters[G.GSTAT_LOST]
    return {"tracingpolicy_loaded": states, "tracingpolicy_memory": memory, "policy_events_lost": lost}
