"""The kernel contract: every number and layout shared with the BPF C, defined once.

One module per header: `events_h` mirrors bpf/include/events.h, `generic_cfg_h` mirrors
bpf/include/generic_cfg.h. Tests compile each header and compare (tests/unit/test_layout.py,
tests/unit/test_gencfg_layout.py). No other module spells these numbers as literals.
"""
