"""Launching an already-compiled Triton kernel without Triton's per-call JIT path.

`JITFunction.run` binds and specialises every argument, builds a cache key, looks the kernel up and builds its
launch metadata on each call: 63 us of host time per statistics launch on the H100 machine, against 17.5 us for
the same compiled kernel launched directly (`examples/host_split_gpu.py`, `docs/gpu/host_split_round9b.log`). At
1k-2k tokens the statistics call is bound by the host, so that difference is time the user waits.

`DirectLauncher(jit_fn)(grid, args, kwargs, config_key)` launches like `jit_fn[grid](*args, **kwargs)`. The first
call for a key goes through Triton (compiling if needed) and keeps the compiled kernel; later calls with the same
key launch it directly. The key is stricter than what Triton specialises on, so a direct launch never runs a kernel
compiled for other arguments:
    config_key   the caller's: whatever fixes the keyword arguments (constexprs, tile config, warps, stages)
    device       the current CUDA device (compiled kernels are loaded per device)
    knobs        Triton's debug and instrumentation settings (compiled into the kernel)
    per tensor   dtype and whether its address is 16-byte aligned (Triton's pointer specialisation)
    per int      == 1, divisible by 16, fits int32, >= 2**63 (Triton's integer specialisations and types)
    per bool     its value; per float: nothing (passed as fp32, never specialised)
Any other argument type, a keyword argument that is not a kernel parameter, a constexpr passed by position, a
Triton without `CompiledKernel` grid launches, or the CPU interpreter: the JIT path, every call. Not repeated on
direct launches: `JITFunction.run`'s pre-run hooks and its check that the kernel's global values have not changed
(the statistics kernel's globals are module constants, and it has no pre-run hooks).
"""

from __future__ import annotations

import torch


def signature(args) -> tuple | None:
    """The specialisation key of positional kernel arguments (see the module doc), or None if one of them is of a
    type this does not know (the caller then takes Triton's own path)."""
    sig = []
    for a in args:
        if isinstance(a, torch.Tensor):
            sig.append((a.dtype, a.data_ptr() % 16 == 0))
        elif isinstance(a, bool):
            sig.append(a)
        elif isinstance(a, int):
            sig.append((a == 1, a % 16 == 0, -(2**31) <= a < 2**31, a >= 2**63))
        elif isinstance(a, float):
            sig.append(0.5)
        else:
            return None
    return tuple(sig)


class DirectLauncher:
    """Launches `jit_fn` (a `triton.JITFunction`) directly once it has been compiled for a key; see the module
    doc. `enabled=False` (the CPU interpreter) always takes the JIT path."""

    def __init__(self, jit_fn, enabled: bool = True):
        self.fn = jit_fn
        self.enabled = enabled
        self._compiled: dict = {}  # key -> (compiled kernel, the keyword arguments in parameter order) or None

    def __call__(self, grid: tuple, args: tuple, kwargs: dict, config_key) -> None:
        if not self.enabled:
            self.fn[grid](*args, **kwargs)
            return
        sig = signature(args)
        key = None if sig is None else (config_key, torch.cuda.current_device(), _knobs(), sig)
        entry = self._compiled.get(key) if key is not None else None
        if entry is not None:
            compiled, rest = entry
            compiled[(grid + (1, 1))[:3]](*args, *rest)
            return
        compiled = self.fn[grid](*args, **kwargs)
        if key is not None and key not in self._compiled:
            self._compiled[key] = self._entry(compiled, len(args), kwargs)

    def _entry(self, compiled, n_positional: int, kwargs: dict):
        """(compiled, the remaining parameters' values in order) when a direct launch can take this call's
        arguments, else None (the key then keeps the JIT path)."""
        names = list(getattr(self.fn, "arg_names", ()))
        rest_names = names[n_positional:]
        if not names or set(kwargs) - set(rest_names) - _OPTIONS or any(n not in kwargs for n in rest_names):
            return None
        constexprs = getattr(self.fn, "constexprs", None)
        if constexprs is None or any(i in constexprs for i in range(n_positional)):
            return None  # a constexpr passed by position would be keyed by its class, not by its value
        if compiled is None or not hasattr(type(compiled), "__getitem__"):
            return None
        return compiled, tuple(kwargs[n] for n in rest_names)

    def clear(self) -> None:
        self._compiled.clear()


def _knobs():
    """The Triton settings `JITFunction.run` reads on every call and compiles into a kernel (debug mode,
    instrumentation): a change takes the JIT path again. None where this Triton has no such knobs."""
    try:
        from triton import knobs
    except ImportError:
        return None
    return (getattr(knobs.runtime, "debug", None), getattr(knobs.compilation, "instrumentation_mode", None))


# launch options a config carries beside the kernel's parameters (`triton.Config.all_kwargs()`)
_OPTIONS = {"num_warps", "num_stages", "num_ctas", "maxnreg", "num_buffers_warp_spec", "num_consumer_groups",
            "reg_dec_producer", "reg_inc_consumer", "enable_fp_fusion", "launch_cooperative_grid",
            "launch_pdl", "ir_override"}
