"""kernels/direct_launch.py: a compiled kernel is launched directly only for arguments it was compiled for.

The keying is tested on the CPU with a stand-in for a JITFunction that records how each call was launched; the
launch itself (a real compiled kernel, the statistics against the reference on repeated calls) on a GPU."""

import numpy as np
import pytest
import torch

from interp.kernels.direct_launch import DirectLauncher, signature


class FakeCompiled:
    def __init__(self, log):
        self.log = log

    def __getitem__(self, grid):
        return lambda *args: self.log.append(("direct", grid, args))


class FakeJIT:
    arg_names = ["x_ptr", "n", "scale", "flag", "BLOCK", "EVEN"]
    constexprs = [4, 5]

    def __init__(self):
        self.log = []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.log.append(("jit", grid, args, kwargs))
            return FakeCompiled(self.log)

        return run


DEVICE = [0]


@pytest.fixture
def launcher(monkeypatch):
    DEVICE[0] = 0
    monkeypatch.setattr(torch.cuda, "current_device", lambda: DEVICE[0])
    fn = FakeJIT()
    return DirectLauncher(fn), fn.log


def _kinds(log):
    return [entry[0] for entry in log]


def test_second_call_with_the_same_key_is_direct(launcher):
    launch, log = launcher
    x = torch.zeros(64, dtype=torch.float16)
    kw = dict(BLOCK=64, EVEN=True, num_warps=4, num_stages=2)
    launch((5,), (x, 32, 0.5, True), kw, "cfg")
    launch((5,), (x, 32, 0.25, True), kw, "cfg")  # floats are never specialised
    assert _kinds(log) == ["jit", "direct"]
    assert log[1][1] == (5, 1, 1)  # the grid padded to three axes
    assert log[1][2] == (x, 32, 0.25, True, 64, True)  # positional, then the constexprs in parameter order


@pytest.mark.parametrize("change", ["dtype", "alignment", "divisible", "one", "int64", "uint64", "flag", "config",
                                    "device", "knobs"])
def test_a_change_triton_specialises_on_takes_the_jit_path(launcher, change, monkeypatch):
    """Each part of the key on its own: the first int is 3 (not 1, not a multiple of 16, int32) so that every
    change below alters exactly one of its classes."""
    from interp.kernels import direct_launch

    launch, log = launcher
    x = torch.zeros(64, dtype=torch.float16)
    kw = dict(BLOCK=64, EVEN=True)
    first = 2**62 + 1 if change == "uint64" else 3
    launch((5,), (x, first, 0.5, True), kw, "cfg")
    args, key = [x, first, 0.5, True], "cfg"
    if change == "dtype":
        args[0] = torch.zeros(64, dtype=torch.bfloat16)
    elif change == "alignment":
        args[0] = x[1:]  # 2 bytes past a 16-byte boundary
        assert args[0].data_ptr() % 16
    elif change == "divisible":
        args[1] = 48
    elif change == "one":
        args[1] = 1
    elif change == "int64":
        args[1] = 2**40 + 1
    elif change == "uint64":
        args[1] = 2**63 + 1
    elif change == "flag":
        args[3] = False
    elif change == "device":
        DEVICE[0] = 1
    elif change == "knobs":
        monkeypatch.setattr(direct_launch, "_knobs", lambda: ("debug", None))
    else:
        key = "another config"
    launch((5,), tuple(args), kw, key)
    assert _kinds(log) == ["jit", "jit"]
    launch((5,), tuple(args), kw, key)  # and that key, once compiled, is direct in turn
    assert _kinds(log) == ["jit", "jit", "direct"]


def test_ints_alike_for_triton_share_a_kernel(launcher):
    launch, log = launcher
    x = torch.zeros(64)
    launch((1,), (x, 33, 0.5, True), dict(BLOCK=64, EVEN=True), "cfg")
    launch((1,), (x, 35, 0.5, True), dict(BLOCK=64, EVEN=True), "cfg")  # neither 1 nor a multiple of 16
    launch((1,), (x, 2**40 + 1, 0.5, True), dict(BLOCK=64, EVEN=True), "cfg")  # int64 now
    assert _kinds(log) == ["jit", "direct", "jit"]


def test_unknown_arguments_always_take_the_jit_path(launcher):
    launch, log = launcher
    x = torch.zeros(64)
    for _ in range(2):
        launch((1,), (x, np.int64(32), 0.5, True), dict(BLOCK=64, EVEN=True), "cfg")  # a numpy int
        launch((1,), (x, 32, 0.5, True), dict(BLOCK=64, EVEN=True, SURPRISE=1), "cfg2")  # not a parameter
        launch((1,), (x, 32, 0.5, True), dict(BLOCK=64), "cfg3")  # a parameter left to its default
        launch((1,), (x, 32, 0.5, True, 64), dict(EVEN=True), "cfg4")  # a constexpr by position
    assert _kinds(log) == ["jit"] * 8
    assert signature((x, np.int64(3))) is None


def test_disabled_always_takes_the_jit_path():
    fn = FakeJIT()
    launch = DirectLauncher(fn, enabled=False)
    for _ in range(3):
        launch((1,), (torch.zeros(4), 32, 0.5, True), dict(BLOCK=64, EVEN=True), "cfg")
    assert _kinds(fn.log) == ["jit"] * 3


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_repeated_statistics_calls_launch_directly_and_agree(dtype, device, monkeypatch):
    """On a GPU the second call of a kind launches the compiled statistics kernel directly (the third call here):
    every statistic equals, bit for bit, that of the same call through Triton's JIT path (the key sums are
    fixed-point, so reruns are identical)."""
    from interp.kernels import attention_with_stats, launcher

    g = torch.Generator(device).manual_seed(3)
    q = torch.randn(1, 8, 333, 64, device=device, dtype=dtype, generator=g)
    k = torch.randn(1, 2, 333, 64, device=device, dtype=dtype, generator=g)
    v = torch.randn(1, 2, 333, 64, device=device, dtype=dtype, generator=g)
    launcher._direct_stats.clear()
    direct = [attention_with_stats(q, k, v, stats="all", span=(3, 40))[1] for _ in range(3)][-1]
    entries = list(launcher._direct_stats._compiled.values())
    assert entries and all(e is not None for e in entries), "the statistics launch never became direct"
    monkeypatch.setattr(launcher._direct_stats, "enabled", False)
    _, jit = attention_with_stats(q, k, v, stats="all", span=(3, 40))
    assert direct.requested() == jit.requested()
    for name, want in jit.items():
        torch.testing.assert_close(getattr(direct, name), want, rtol=0, atol=0, equal_nan=True, msg=name)


class FakeRawCompiled(FakeCompiled):
    """A compiled kernel with Triton's launcher interface: `run(gx, gy, gz, stream, function, packed_metadata,
    launch_metadata, enter_hook, exit_hook, *args)`, loaded by `_init_handles`."""

    packed_metadata = "packed"

    def __init__(self, log):
        super().__init__(log)
        self.function = None

    def _init_handles(self):
        self.function = "fn-handle"

    def run(self, gx, gy, gz, stream, function, packed, meta, enter, exit_, *args):
        self.log.append(("raw", (gx, gy, gz), stream, function, packed, (meta, enter, exit_), args))


@pytest.fixture
def raw_launcher(monkeypatch):
    from interp.kernels import direct_launch

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(direct_launch, "_stream", lambda device: f"stream{device}")
    monkeypatch.setattr(direct_launch, "RAW_LAUNCH", True)

    class JIT(FakeJIT):
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                self.log.append(("jit", grid, args, kwargs))
                return FakeRawCompiled(self.log)
            return run

    fn = JIT()
    return DirectLauncher(fn), fn.log


def test_direct_launch_calls_the_kernels_launcher(raw_launcher):
    launch, log = raw_launcher
    x = torch.zeros(64, dtype=torch.float16)
    kw = dict(BLOCK=64, EVEN=True, num_warps=4)
    launch((7,), (x, 32, 0.5, True), kw, "cfg")
    launch((7, 2), (x, 32, 0.25, True), kw, "cfg")
    assert _kinds(log) == ["jit", "raw"]
    assert log[1][1:] == ((7, 2, 1), "stream0", "fn-handle", "packed", (None, None, None), (x, 32, 0.25, True, 64, True))


def test_a_launch_hook_takes_the_grid_launch_that_calls_it(raw_launcher, monkeypatch):
    from triton import knobs

    launch, log = raw_launcher
    x = torch.zeros(64, dtype=torch.float16)
    kw = dict(BLOCK=64, EVEN=True)
    launch((3,), (x, 32, 0.5, True), kw, "cfg")
    monkeypatch.setattr(knobs.runtime, "launch_enter_hook", lambda *a: None)
    launch((3,), (x, 32, 0.5, True), kw, "cfg")
    assert _kinds(log) == ["jit", "direct"]


def test_a_hook_in_tritons_hook_chain_takes_the_grid_launch(raw_launcher):
    from triton import knobs

    chain = knobs.runtime.launch_enter_hook
    if not hasattr(chain, "add"):
        pytest.skip("this Triton's launch hooks are not a HookChain")
    launch, log = raw_launcher
    x = torch.zeros(64, dtype=torch.float16)
    kw = dict(BLOCK=64, EVEN=True)
    launch((3,), (x, 32, 0.5, True), kw, "cfg")
    launch((3,), (x, 32, 0.5, True), kw, "cfg")
    hook = lambda *a: None  # noqa: E731
    chain.add(hook)
    try:
        launch((3,), (x, 32, 0.5, True), kw, "cfg")
    finally:
        chain.remove(hook)
    assert _kinds(log) == ["jit", "raw", "direct"]


def test_bools_ints_and_alignment_never_share_a_code():
    x = torch.zeros(64, dtype=torch.float16)
    assert signature((True,)) != signature((1,))
    assert signature((False,)) != signature((0,))
    assert signature((x, 1)) != signature((x, True))
    assert signature((x,)) != signature((x[1:],))


def test_raw_launch_off_takes_the_grid_launch(raw_launcher, monkeypatch):
    from interp.kernels import direct_launch

    monkeypatch.setattr(direct_launch, "RAW_LAUNCH", False)
    launch, log = raw_launcher
    x = torch.zeros(64, dtype=torch.float16)
    kw = dict(BLOCK=64, EVEN=True)
    launch((3,), (x, 32, 0.5, True), kw, "cfg")
    launch((3,), (x, 32, 0.5, True), kw, "cfg")
    assert _kinds(log) == ["jit", "direct"]


def test_raw_launch_default_by_env_and_triton_version():
    from interp.kernels.direct_launch import raw_launch_default

    assert raw_launch_default(None, "3.6.0") and raw_launch_default(None, "3.9.1")
    assert not any(raw_launch_default(None, v) for v in ("3.5.1", "4.0.0", "main"))
    assert raw_launch_default("1", "3.2.0") and not raw_launch_default("0", "3.6.0")
    with pytest.raises(ValueError, match="INTERP_RAW_LAUNCH must be '0' or '1'"):
        raw_launch_default("yes", "3.6.0")


def test_installed_tritons_grid_launch_calls_run_as_the_raw_launch_does():
    """Where the raw launch is on by default, this Triton's `compiled[grid](...)` passes `run` the arguments
    DirectLauncher passes (grid, stream, function, packed metadata, launch metadata, two hooks, then the args)."""
    import inspect

    import triton
    from triton.compiler.compiler import CompiledKernel

    from interp.kernels.direct_launch import raw_launch_default

    if not raw_launch_default(None, triton.__version__):
        pytest.skip(f"raw launch not on by default for Triton {triton.__version__}")
    src = " ".join(inspect.getsource(CompiledKernel.__getitem__).split())
    assert ("self.run(grid[0], grid[1], grid[2], stream, self.function, self.packed_metadata, launch_metadata, "
            "knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *args)") in src
