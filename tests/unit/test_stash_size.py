"""The return: true stash is sized from the hook's arguments (src/tetragon/sensors/stash_size.py)."""

from __future__ import annotations

from tetragon.abi import generic_cfg_h as G
from tetragon.sensors.stash_size import STASH_MAX, record_max, stash_sizing


def hook(*readers: int, max_data: int = 0, return_copy: int = -1) -> G.HookCfg:
    cfg = G.HookCfg()
    cfg.nargs = len(readers)
    for i, reader in enumerate(readers):
        cfg.args[i].reader = reader
        cfg.args[i].max_data = max_data
        cfg.args[i].return_copy = int(i == return_copy)
    return cfg


def test_openat_write_shape_int_string_int() -> None:
    # msg_generic 56 + (8 + 8) + (8 + 4096 + 8) + (8 + 8)
    cfg = hook(G.RD_INT, G.RD_USTR, G.RD_INT)
    assert record_max(cfg) == 4200
    # 48-byte stash header + 4200; 1 MiB / 4248 = 246 entries, raised to the floor of 256
    assert stash_sizing(cfg) == (4200, 4248, 256)


def test_integer_arguments_keep_4096_entries() -> None:
    data, value, entries = stash_sizing(hook(G.RD_INT, G.RD_INT))
    assert (data, value, entries) == (88, 136, 4096)


def test_buffers_count_their_max_data_and_return_copies_nothing() -> None:
    assert record_max(hook(G.RD_INT, G.RD_UBUF, max_data=10000)) == 56 + 16 + 8 + 8 + 10000
    assert record_max(hook(G.RD_INT, G.RD_UBUF, return_copy=1)) == 56 + 16 + 8


def test_a_reader_without_a_bound_gets_the_whole_stash() -> None:
    assert record_max(hook(G.RD_INT, 250)) == STASH_MAX
    # the data area stops 8 bytes short: the kernel's copy is bounded by a 0x3fff mask
    assert stash_sizing(hook(G.RD_FILENAME, G.RD_FILENAME))[0] == STASH_MAX - 8


def test_stack_traces_a_selector_posts_are_stashed_with_the_arguments() -> None:
    """put_stacks appends the blobs before stash_put: a return: true hook with kernelStackTrace /
    userStackTrace needs room for them, or every record would be lost."""
    cfg = hook(G.RD_INT)
    base = record_max(cfg)
    cfg.nselectors = 2
    cfg.sel[0].nactions = 1
    cfg.sel[0].actions[0].stack = G.STACK_KERNEL
    blob = 8 + 8 * 127  # gen_arg header + GEN_STACK_DEPTH return addresses
    assert record_max(cfg) == base + blob
    cfg.sel[1].nactions = 2
    cfg.sel[1].actions[1].stack = G.STACK_KERNEL | G.STACK_USER
    assert record_max(cfg) == base + 2 * blob  # the most any one selector asks for
    cfg.nselectors = 1
    assert record_max(cfg) == base + blob
