"""How large a return: true hook's `gen_stash` map is (bpf/include/generic/stash.h).

The entry program stashes its record per thread until the return program completes it. The value
holds the largest entry record the hook's arguments can make, not the 16 kB any hook could; the number
of entries is capped so that the map's ceiling stays near STASH_BUDGET. Kernels before 6.4 charge (and
`tetra tracingpolicy list` reports) a non-preallocated hash at its ceiling, max_entries x value, so on
Debian's 6.1 the old 4096 x 16 kB map showed as 67 MB for one syscall hook. A thread that finds the map
full loses its record (counted as lost, like a full ring buffer).
"""

from __future__ import annotations

from tetragon.abi import events_h as E
from tetragon.abi import generic_cfg_h as G

STASH_MAX = 16384  # bpf/include/generic/stash.h: largest stashed record
STASH_HEADER = 8 + 8 * E.GEN_ARGS_MAX  # struct gen_stash before data[]: size, sel, pad, uptr[]
STASH_MAX_ENTRIES = 4096  # threads inside one hook at a time, when records are small
STASH_MIN_ENTRIES = 256  # never fewer, however large the records
STASH_BUDGET = 1 << 20  # bytes of map ceiling per hook that decide the cap in between

_PATH = E.GEN_PATH.size + E.GEN_STRING_MAX + 8
_STRING = E.GEN_STRING_MAX + 8
# payload bytes after an argument's struct gen_arg header, at most, per reader (RD_*)
_FIXED_PAYLOAD = {
    G.RD_INT: 8,
    G.RD_SYSCALL64: 8,
    G.RD_USTR: _STRING,
    G.RD_KSTR: _STRING,
    G.RD_DATALOC: _STRING,
    G.RD_STR: _STRING,
    G.RD_KFILENAME: _STRING,
    G.RD_FILENAME: _PATH + E.GEN_STRING_MAX,  # the cwd or dirfd's path, then the user's string
    G.RD_FD: _PATH,
    G.RD_FILE: _PATH,
    G.RD_PATH: _PATH,
    G.RD_BINPRM: _PATH,
    G.RD_DENTRY: _PATH,
    G.RD_SOCK_FD: E.GEN_SOCK.size,
    G.RD_SOCK: E.GEN_SOCK.size,
    G.RD_USOCKADDR: E.GEN_SOCKADDR.size,
    G.RD_CRED: E.GEN_CRED.size,
    G.RD_CUR_CRED: E.GEN_CRED.size,
}
_BUFFERS = (G.RD_UBUF, G.RD_BUF, G.RD_IOVEC)


def _payload_max(arg: G.ArgCfg) -> int:
    if arg.return_copy:
        return 0  # read at return, into the record being completed, never stashed
    if arg.reader in _BUFFERS:
        return E.GEN_BYTES.size + max(int(arg.max_data), E.GEN_BYTES_DEFAULT)
    # a reader this table does not know yet may write anything up to the stash's limit
    return _FIXED_PAYLOAD.get(int(arg.reader), STASH_MAX)


_STACK_BLOB = E.GEN_ARG.size + 8 * E.GEN_STACK_DEPTH  # bpf/include/generic/stacks.h: one stack's blob


def _stack_blobs_max(cfg: G.HookCfg) -> int:
    """Bytes of the stack blobs a matched Post's kernelStackTrace / userStackTrace append to the
    entry record (before it is stashed), the most any selector of the hook asks for."""
    most = 0
    for sel in cfg.sel[: cfg.nselectors]:
        stack = 0
        for action in sel.actions[: sel.nactions]:
            stack |= action.stack
        most = max(most, bin(stack & (G.STACK_KERNEL | G.STACK_USER)).count("1") * _STACK_BLOB)
    return most


def record_max(cfg: G.HookCfg) -> int:
    """The largest entry record of this hook: the message header, each argument's blob and the stack
    traces a selector's Post asks for."""
    args = sum(E.GEN_ARG.size + _payload_max(cfg.args[i]) for i in range(cfg.nargs))
    return min(E.MSG_GENERIC.size + args + _stack_blobs_max(cfg), STASH_MAX)


def stash_sizing(cfg: G.HookCfg) -> tuple[int, int, int]:
    """(data bytes, value size, max entries) of the hook's gen_stash map."""
    # at most STASH_MAX - 8: the kernel side bounds the copy with a 0x3fff mask, so a 16384-byte
    # record would be copied as 0 bytes; with this limit it is counted as lost instead
    data = min((record_max(cfg) + 7) & ~7, STASH_MAX - 8)
    value = STASH_HEADER + data
    entries = max(STASH_MIN_ENTRIES, min(STASH_MAX_ENTRIES, STASH_BUDGET // value))
    return data, value, entries
