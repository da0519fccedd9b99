"""spec.usdts -> hooks: a uprobe at each probe point of provider:name in the binary's SDT notes.

Probe points whose argument specs are the same share one hook (one object, a uprobe per point);
points with another spec get their own hook, since the spec is the object's read-only data
(`usdt_args`, bpf/include/generic/usdt.h). A probe with a semaphore is attached with the semaphore's
file offset as the uprobe's ref_ctr_offset, so the kernel increments it while the probe is attached
(the traced program then does the work of its `PROVIDER_NAME_ENABLED()` branches), as libbpf does.

Arguments are numbered as the USDT probe numbers them (`index`); `Set` writes `argValue` over the
argument `argIndex` in the traced program's memory (bpf_probe_write_user), so it is refused for an
argument the spec puts in a register or a constant.
"""

from __future__ import annotations

from tetragon.abi import events_h as E
from tetragon.abi import generic_cfg_h as G
from tetragon.abi import usdt_h as U
from tetragon.bpf.features import missing_feature_message
from tetragon.policy.compile.args import ArgSrc
from tetragon.policy.compile.hooks import PolicySite, _function_arg_pos, _Mechanism, _plan
from tetragon.policy.compile.plan import Attach, HookPlan, unsupported
from tetragon.policy.errors import PolicyError
from tetragon.policy.schema import UsdtSpec
from tetragon.policy.usdt import UsdtArg, UsdtSite, find_sites


def _sites(hook: UsdtSpec, where: str) -> list[UsdtSite]:
    try:
        sites = find_sites(hook.path, hook.provider, hook.name)
    except FileNotFoundError:
        raise PolicyError(f"{where}: usdt path {hook.path} does not exist") from None
    except OSError as e:
        raise PolicyError(f"{where}: cannot read {hook.path}: {e.strerror or e}") from None
    except ValueError as e:
        raise unsupported(f"{where}: {hook.path}: {e}") from None
    if not sites:
        raise PolicyError(f"{where}: {hook.path} has no USDT probe {hook.provider}:{hook.name}")
    return sites


def _check_set(site: PolicySite, hook: UsdtSpec, where: str, args: tuple[UsdtArg, ...]) -> None:
    for k, sel in enumerate(hook.selectors):
        for a in sel.match_actions:
            if a.action != "Set":
                continue
            at, n = f"{where}.selectors[{k}]", a.arg_index
            if n >= len(args):
                raise PolicyError(f"{at}: Set argIndex {n}: the probe has {len(args)} arguments")
            if args[n].kind not in (U.ARG_REG_DEREF, U.ARG_SIB):
                raise unsupported(
                    f"{at}: Set argIndex {n}: the probe passes that argument in a register or as a "
                    "constant; Set writes arguments in the program's memory only"
                )
            if not site.features.get("probe_write_user", True):
                raise unsupported(f"{at}: action Set: {missing_feature_message('probe_write_user')}")


def compile_usdts(site: PolicySite, first_hook_id: int) -> list[HookPlan]:
    """Every hook of spec.usdts, numbered from first_hook_id."""
    hooks: list[HookPlan] = []
    for i, hook in enumerate(site.policy.spec.usdts):
        where = f"spec.usdts[{i}] ({hook.provider}/{hook.name})"
        if not site.features.get("uprobe", True):
            raise unsupported(f"{where}: {missing_feature_message('uprobe')}")
        if hook.btf_path:
            raise unsupported(f"{where}: btfPath is not supported")
        groups: dict[tuple[UsdtArg, ...], list[UsdtSite]] = {}
        for s in _sites(hook, where):
            groups.setdefault(s.args, []).append(s)
        for args, sites in groups.items():
            for k, arg in enumerate(hook.args):
                if arg.index >= len(args):
                    raise PolicyError(
                        f"{where}.args[{k}]: index {arg.index}, but the probe has {len(args)} arguments"
                    )
            _check_set(site, hook, where, args)
            src = ArgSrc(G.MECH_USDT, True, lambda n: (n, 8, False))
            attach = [
                Attach("uprobe", "gen_uprobe", (hook.path, "", str(s.offset), str(s.ref_ctr_offset)))
                for s in sites
            ]
            mech = _Mechanism(
                src, E.MSG_OP_GENERIC_USDT, _function_arg_pos(hook, where), attach, "generic_usdt"
            )
            info = {
                "event": "process_usdt",
                "path": hook.path,
                "provider": hook.provider,
                "probe_name": hook.name,
            }
            plan = _plan(site, first_hook_id + len(hooks), hook, where, mech, **info)
            cfg = U.UsdtArgs()
            for n, a in enumerate(args[: U.USDT_ARGS_MAX]):
                cfg[n] = a.cfg()
            plan.rodata["usdt_args"] = bytes(cfg)
            if any(a.action == "Set" for sel in hook.selectors for a in sel.match_actions):
                # the event reports the arguments as the probe passed them, before Set, as Tetragon's
                plan.cfg.sel_args = (1 << plan.cfg.nargs) - 1
            hooks.append(plan)
    return hooks
