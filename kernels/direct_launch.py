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
Triton without `CompiledKernel` grid launches, or the CPU interpreter: the JIT path, every call. A direct launch
is `compiled[grid](...)`; with RAW_LAUNCH (the default on Triton 3.6-3.9; env INTERP_RAW_LAUNCH=0 / 1 turns it
off / on) it calls the compiled kernel's launcher itself (`CompiledKernel.run`, as `compiled[grid](...)` does in
Triton 3.6 and 3.9, without building a closure and looking up the device and stream through Triton's driver each
time), unless a Triton launch hook is set: 10-13 us less host time per 1k statistics call on the H100 machine
(whole call 134.9 -> 124.7 us back to back, 136.2 -> 123.5 behind a sleep kernel;
`docs/gpu/host_split_round11*.log`). Not repeated on direct launches: `JITFunction.run`'s pre-run hooks and its
check that the kernel's global values have not changed (the statistics kernel's globals are module constants, and
it has no pre-run hooks).
"""

from __future__ import annotations

import os

import torch
import triton


def raw_launch_default(env: str | None, version: str) -> bool:
    """Whether to call the compiled kernel's launcher itself: env INTERP_RAW_LAUNCH "1" / "0" decides; unset, on for
    the Triton versions whose `CompiledKernel.__getitem__` calls `run` with the arguments passed here (3.6, whose
    kernel tests pass this way on the H100, `docs/gpu/COMMANDS.md` round 11, through 3.9)."""
    if env is not None:
        if env not in ("0", "1"):
            raise ValueError(f"INTERP_RAW_LAUNCH must be '0' or '1', got {env!r}")
        return env == "1"
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return False
    return (3, 6) <= (major, minor) <= (3, 9)


RAW_LAUNCH = raw_launch_default(os.environ.get("INTERP_RAW_LAUNCH"), triton.__version__)


def signature(args) -> tuple | None:
    """The specialisation key of positional kernel arguments (see the module doc), or None if one of them is of a
    type this does not know (the caller then takes Triton's own path). Per int one code for its classes: int32
    range: 1 (== 1), 16 (divisible by 16), 0; beyond: 32 / 48 (divisible) as int64, 64 / 80 (divisible) from 2^63.
    Per tensor its dtype and "a" (16-byte aligned) or "u"; per bool "T" or "F"; per float 0.5."""
    sig = []
    append = sig.append
    tensor = torch.Tensor
    for a in args:
        t = type(a)
        if t is int:
            if -2147483648 <= a < 2147483648:
                append(1 if a == 1 else (0 if a % 16 else 16))
            else:
                append((64 if a >= 2**63 else 32) + (0 if a % 16 else 16))
        elif t is tensor or isinstance(a, tensor):
            append(a.dtype)
            append("u" if a.data_ptr() % 16 else "a")  # strings: never equal to an int's or a bool's code
        elif t is bool:
            append("T" if a else "F")
        elif t is float:
            append(0.5)
        else:
            return None
    return tuple(sig)


class DirectLauncher:
    """Launches `jit_fn` (a `triton.JITFunction`) directly once it has been compiled for a key; see the module
    doc. `enabled=False` (the CPU interpreter) always takes the JIT path."""

    def __init__(self, jit_fn, enabled: bool = True):
        self.fn = jit_fn
        self.enabled = enabled
        # key -> (compiled kernel, the keyword arguments in parameter order, whether its launcher can be called
        # directly) or None
        self._compiled: dict = {}

    def __call__(self, grid: tuple, args: tuple, kwargs: dict, config_key) -> None:
        if not self.enabled:
            self.fn[grid](*args, **kwargs)
            return
        sig = signature(args)
        device = torch.cuda.current_device()
        key = None if sig is None else (config_key, device, _knobs(), sig)
        entry = self._compiled.get(key) if key is not None else None
        if entry is not None:
            compiled, rest, raw = entry
            grid = (grid + (1, 1))[:3]
            runtime = _triton_knobs().runtime if raw else None
            if raw and _no_hook(runtime.launch_enter_hook) and _no_hook(runtime.launch_exit_hook):
                # what `compiled[grid](...)` does, without its closure and its device and stream lookups
                compiled.run(grid[0], grid[1], grid[2], _stream(device), compiled.function,
                             compiled.packed_metadata, None, None, None, *args, *rest)
            else:
                compiled[grid](*args, *rest)
            return
        compiled = self.fn[grid](*args, **kwargs)
        if key is not None and key not in self._compiled:
            self._compiled[key] = self._entry(compiled, len(args), kwargs)

    def _entry(self, compiled, n_positional: int, kwargs: dict):
        """(compiled, the remaining parameters' values in order, whether its launcher `compiled.run` can be called
        directly) when a direct launch can take this call's arguments, else None (the key then keeps the JIT
        path)."""
        names = list(getattr(self.fn, "arg_names", ()))
        rest_names = names[n_positional:]
        if not names or set(kwargs) - set(rest_names) - _OPTIONS or any(n not in kwargs for n in rest_names):
            return None
        constexprs = getattr(self.fn, "constexprs", None)
        if constexprs is None or any(i in constexprs for i in range(n_positional)):
            return None  # a constexpr passed by position would be keyed by its class, not by its value
        if compiled is None or not hasattr(type(compiled), "__getitem__"):
            return None
        raw = RAW_LAUNCH and _triton_knobs() is not None and all(
            hasattr(compiled, a) for a in ("run", "_init_handles", "packed_metadata"))
        if raw:
            compiled._init_handles()  # loads the kernel: `function` is set from here on
            raw = getattr(compiled, "function", None) is not None
        return compiled, tuple(kwargs[n] for n in rest_names), raw

    def clear(self) -> None:
        self._compiled.clear()


_KNOBS: list = []


def _triton_knobs():
    """`triton.knobs`, imported once; None where this Triton has none."""
    if not _KNOBS:
        try:
            from triton import knobs
        except ImportError:
            knobs = None
        _KNOBS.append(knobs)
    return _KNOBS[0]


def _knobs():
    """The Triton settings `JITFunction.run` reads on every call and compiles into a kernel (debug mode,
    instrumentation): a change takes the JIT path again. None where this Triton has no such knobs."""
    knobs = _triton_knobs()
    if knobs is None:
        return None
    return (getattr(knobs.runtime, "debug", None), getattr(knobs.compilation, "instrumentation_mode", None))


def _no_hook(hook) -> bool:
    """No launch hook is set: None (Triton 3.6) or an empty `HookChain` (later Tritons), which calls nothing."""
    chain = getattr(_triton_knobs(), "HookChain", None)
    return hook is None or (chain is not None and isinstance(hook, chain) and not hook.calls)


def _stream(device: int):
    """The current CUDA stream's handle on `device`, as Triton's driver gets it."""
    try:
        from torch._C import _cuda_getCurrentRawStream
    except ImportError:
        return torch.cuda.current_stream(device).cuda_stream
    return _cuda_getCurrentRawStream(device)


# launch options a config carries beside the kernel's parameters (`triton.Config.all_kwargs()`)
_OPTIONS = {"num_warps", "num_stages", "num_ctas", "maxnreg", "num_buffers_warp_spec", "num_consumer_groups",
            "reg_dec_producer", "reg_inc_consumer", "enable_fp_fusion", "launch_cooperative_grid",
            "launch_pdl", "ir_override"}
