"""Bad input to the interventions (HeadAblation, HeadMask, KeyMask, ScaleAttention, StreamingAttention,
GatedStreaming): a ValueError/TypeError that names the argument, what it got and what is allowed, raised before the
run (never a bare assert, a deep torch traceback, or a silent wrong answer such as rounded key positions, a mask
applied twice, NaN logits or an intervention that does nothing).

One row per case; grow the table with every case found. Good inputs that used to be refused are checked below it."""

import numpy as np
import pytest
import torch

import interp
from interp import GatedStreaming, HeadAblation, HeadMask, KeyMask, ScaleAttention, StreamingAttention

NAN = float("nan")


@pytest.fixture(scope="module")
def m():
    return interp.load("toy-induction")  # 2 layers x 4 heads, d_head 16


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1, 64, (2, 20), generator=torch.Generator().manual_seed(0))


L, H, D = 2, 4, 16

CASES = [
    # --- 1. HeadMask.only_layers
    ("only_layers repeated", HeadMask(torch.full((L, H), .5), only_layers=[0, 0]), ValueError,
     r"HeadMask.only_layers repeats layer 0; each layer may appear once"),
    ("only_layers empty", HeadMask(torch.zeros(L, H), only_layers=[]), ValueError, r"HeadMask.only_layers is empty"),
    ("only_layers str", HeadMask(torch.zeros(L, H), only_layers="0"), TypeError,
     r"HeadMask.only_layers must be an int layer, a list of distinct layers in 0..1, or None.*got str '0'"),
    ("only_layers float", HeadMask(torch.zeros(L, H), only_layers=[0.0]), TypeError,
     r"HeadMask.only_layers: layers must be ints, got 0.0"),
    ("only_layers 2", HeadMask(torch.zeros(L, H), only_layers=2), ValueError,
     r"HeadMask.only_layers: layer 2 out of range; the model has layers 0..1"),
    # --- 2. keys of KeyMask / ScaleAttention
    ("keys str", KeyMask(0, "12"), TypeError, r"KeyMask.keys must be an int position, a list/tuple of int positions.*"
     r"got str '12'"),
    ("keys None", KeyMask(0, None), TypeError, r"KeyMask.keys must be .* got NoneType None"),
    ("keys float in list", KeyMask(0, [1.7]), TypeError, r"KeyMask.keys: positions must be ints, got 1.7"),
    ("keys float", KeyMask(0, 1.0), TypeError, r"KeyMask.keys must be .* got float 1.0"),
    ("keys bool in list", KeyMask(0, [True, False]), TypeError, r"KeyMask.keys: positions must be ints, got True"),
    ("keys float numpy", KeyMask(0, np.array([1.9])), TypeError, r"KeyMask.keys .* numpy array of dtype float64"),
    ("keys float tensor mask", KeyMask(0, torch.tensor([1.] + [0.] * 19)), TypeError,
     r"KeyMask.keys .* torch.float32 tensor .*keys.bool\(\)"),
    ("keys int 0/1 tensor mask", KeyMask(0, torch.tensor([1] + [0] * 19)), ValueError,
     r"KeyMask.keys repeats position 0; positions must be distinct \(a 0/1 mask must be a bool tensor"),
    ("keys 2-D positions", KeyMask(0, torch.tensor([[0, 1]])), ValueError,
     r"KeyMask.keys: a tensor of positions must be 0-D or 1-D, got shape \(1, 2\)"),
    ("keys 3-D bool mask", KeyMask(0, torch.ones(1, 2, 20, dtype=torch.bool)), ValueError,
     r"KeyMask.keys: a bool mask must be \[k_len\] or \[batch, k_len\], got shape \(1, 2, 20\)"),
    ("keys bool mask wrong length", KeyMask(0, torch.ones(5, dtype=torch.bool)), ValueError,
     r"KeyMask.keys: a bool mask must be \[k_len\] = \[20\] or \[batch, k_len\] = \[2, 20\].*got \(5,\)"),
    ("keys out of range", KeyMask(0, [50]), ValueError, r"KeyMask.keys: key position 50 out of range for 20 keys"),
    ("keys meta", KeyMask(0, torch.tensor([1], device="meta")), ValueError, r"KeyMask.keys is on the meta device"),
    ("scale keys float", ScaleAttention(0, [0.5], .5), TypeError, r"ScaleAttention.keys: positions must be ints"),
    ("scale keys str", ScaleAttention(0, "3", .5, redistribute="renormalize"), TypeError,
     r"ScaleAttention.keys must be .* got str '3'"),
    # --- 3. NaN, mean_value with mode zero, mean_value shape
    ("mean_value NaN", HeadAblation(0, [1], mode="mean", mean_value=torch.full((H, D), NAN)), ValueError,
     r"HeadAblation.mean_value has NaN or Inf entries"),
    ("mean_value with mode zero", HeadAblation(0, [1], mean_value=torch.ones(H, D)), ValueError,
     r"HeadAblation.mean_value is only used with mode='mean', got mode='zero'"),
    ("mean_value 1-D", HeadAblation(0, [1], mode="mean", mean_value=torch.zeros(D)), ValueError,
     r"HeadAblation.mean_value must be \[n_heads, d_head_v\] = \[4, d_head_v\].*got \(16,\)"),
    ("mean_value wrong heads", HeadAblation(0, [1], mode="mean", mean_value=torch.zeros(2, 3)), ValueError,
     r"HeadAblation.mean_value must be \[n_heads, d_head_v\] = \[4, d_head_v\].*got \(2, 3\)"),
    ("mean_value wrong d_head", HeadAblation(0, [1], mode="mean", mean_value=torch.zeros(H, 3)), ValueError,
     r"HeadAblation.mean_value must be \[n_heads, d_head_v\] = \[4, 16\] \(this layer's hook_z\), got \(4, 3\)"),
    ("mean_value list", HeadAblation(0, [1], mode="mean", mean_value=[[0.] * D] * H), TypeError,
     r"HeadAblation.mean_value must be a tensor \[n_heads, d_head_v\]"),
    ("mean_value int", HeadAblation(0, [1], mode="mean", mean_value=torch.ones(H, D, dtype=torch.long)), TypeError,
     r"HeadAblation.mean_value must be a floating-point tensor"),
    ("gate_logits NaN", GatedStreaming(0, torch.full((H,), NAN)), ValueError,
     r"GatedStreaming.gate_logits has NaN or Inf entries"),
    ("baseline NaN", HeadMask(torch.zeros(L, H), baseline={0: torch.full((1, 1, H, D), NAN)}), ValueError,
     r"HeadMask.baseline\[0\] has NaN or Inf entries"),
    ("baseline meta", HeadMask(torch.zeros(L, H), baseline={0: torch.zeros(1, 1, H, D, device="meta")}), ValueError,
     r"HeadMask.baseline\[0\] is on the meta device"),
    ("baseline int", HeadMask(torch.zeros(L, H), baseline={0: torch.zeros(1, 1, H, D, dtype=torch.long)}), TypeError,
     r"HeadMask.baseline\[0\] must be a floating-point tensor"),
    # --- 4. empty selections
    ("ablation heads []", HeadAblation(0, []), ValueError,
     r"HeadAblation: heads must name at least one head, got an empty list \(heads=None means every head\)"),
    ("keymask keys []", KeyMask(0, []), ValueError, r"KeyMask.keys must name at least one key position"),
    ("keymask all-False mask", KeyMask(0, torch.zeros(20, dtype=torch.bool)), ValueError,
     r"KeyMask.keys: the bool mask selects no key"),
    ("scale keys []", ScaleAttention(0, [], .5), ValueError, r"ScaleAttention.keys must name at least one key"),
    ("scale heads []", ScaleAttention(0, [0], .5, heads=[]), ValueError, r"ScaleAttention: heads must name at least"),
    ("streaming heads []", StreamingAttention(0, heads=[]), ValueError,
     r"StreamingAttention: heads must name at least one head"),
    ("keymask heads ()", KeyMask(0, [0], heads=()), ValueError, r"KeyMask: heads must name at least one head"),
    ("heads float", HeadAblation(0, 1.5), TypeError, r"HeadAblation: heads must be an int, a list of ints"),
    ("heads float tensor", HeadAblation(0, torch.tensor(1.0)), TypeError,
     r"HeadAblation: heads must be an int, a list of ints, a 1-D integer tensor/array or None.*torch.float32"),
    ("heads str", HeadAblation(0, "1"), TypeError, r"HeadAblation: heads must be .* got str '1'"),
    ("only_layers float tensor", HeadMask(torch.zeros(L, H), only_layers=torch.tensor([0.0])), TypeError,
     r"HeadMask.only_layers must be .* torch.float32 tensor"),
    # --- 5. empty gates, meta mask
    ("gate_logits empty", GatedStreaming(0, torch.zeros(0)), ValueError,
     r"GatedStreaming.gate_logits is empty; give one logit per KV head"),
    ("gate_logits meta", GatedStreaming(0, torch.zeros(H, device="meta")), ValueError,
     r"GatedStreaming.gate_logits is on the meta device"),
    ("mask meta", HeadMask(torch.ones(L, H, device="meta")), ValueError, r"HeadMask.mask is on the meta device"),
    # --- 6. ScaleAttention.factor
    ("factor True", ScaleAttention(0, [0], True), TypeError,
     r"ScaleAttention.factor must be a real number >= 0 \(int, float, numpy scalar or 0-D tensor\), got bool True"),
    ("factor str", ScaleAttention(0, [0], "0.5"), TypeError, r"ScaleAttention.factor must be a real number.*str"),
    ("factor 1-D tensor", ScaleAttention(0, [0], torch.tensor([.5])), TypeError,
     r"ScaleAttention.factor must be a real number.*shape \(1,\)"),
    ("factor bool tensor", ScaleAttention(0, [0], torch.tensor(True)), TypeError,
     r"ScaleAttention.factor must be a real number.*torch.bool"),
    ("factor grad tensor", ScaleAttention(0, [0], torch.tensor(.5, requires_grad=True)), TypeError,
     r"ScaleAttention.factor is a tensor that requires grad"),
    ("factor -1 numpy", ScaleAttention(0, [0], np.float32(-1)), ValueError,
     r"ScaleAttention.factor must be a finite number >= 0, got -1.0"),
    ("factor nan tensor", ScaleAttention(0, [0], torch.tensor(NAN)), ValueError,
     r"ScaleAttention.factor must be a finite number >= 0, got nan"),
    ("factor 2 proportional tensor", ScaleAttention(0, [0], torch.tensor(2.0)), ValueError,
     r"redistribute='proportional' takes 0 <= factor <= 1 \(got 2.0\)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_intervention_bad_input(case, m, ids):
    _, iv, exc, match = case
    with pytest.raises(exc, match=match):
        m.run_with_hooks(ids, interventions=[iv])


def _same(m, ids, a, b):
    torch.testing.assert_close(m.run_with_hooks(ids, interventions=[a]), m.run_with_hooks(ids, interventions=[b]))


def test_only_layers_accepts_an_int(m, ids):
    xi = torch.full((L, H), .5)
    _same(m, ids, HeadMask(xi, only_layers=0), HeadMask(xi, only_layers=[0]))
    _same(m, ids, HeadMask(xi, only_layers=np.int64(1)), HeadMask(xi, only_layers=(1,)))
    _same(m, ids, HeadMask(xi, only_layers=torch.tensor([1, 0])), HeadMask(xi, only_layers=np.array([0, 1])))
    assert not torch.allclose(m.run_with_hooks(ids, interventions=[HeadMask(xi, only_layers=0)]), m(ids))


@pytest.mark.parametrize("iv_of", [lambda k: KeyMask(0, k, heads=[1]), lambda k: ScaleAttention(0, k, .25),
                                   lambda k: ScaleAttention(0, k, 3.0, redistribute="renormalize")],
                         ids=["KeyMask", "ScaleAttention", "ScaleAttention-renormalize"])
def test_integer_keys_in_every_form_agree(m, ids, iv_of):
    """Integer positions as ints, lists, numpy / torch integer arrays (and the bool mask of the same keys) give the
    same run; negative positions count from the end."""
    want = m.run_with_hooks(ids, interventions=[iv_of([2, 5])])
    assert not torch.allclose(want, m(ids))
    mask = torch.zeros(20, dtype=torch.bool)
    mask[[2, 5]] = True
    for keys in ((2, 5), np.array([2, 5]), torch.tensor([2, 5]), torch.tensor([2, 5], dtype=torch.int32),
                 [np.int64(2), 5], [2, -15], mask, mask.numpy(), mask[None].expand(2, -1)):
        torch.testing.assert_close(m.run_with_hooks(ids, interventions=[iv_of(keys)]), want)
    _same(m, ids, iv_of(3), iv_of(torch.tensor(3)))


def test_factor_accepts_real_numbers(m, ids):
    want = m.run_with_hooks(ids, interventions=[ScaleAttention(0, [0], .5)])
    assert not torch.allclose(want, m(ids))
    for factor in (np.float32(.5), np.float64(.5), torch.tensor(.5), torch.tensor(.5, dtype=torch.float64),
                   np.array(.5)):
        torch.testing.assert_close(m.run_with_hooks(ids, interventions=[ScaleAttention(0, [0], factor)]), want)
    ren = m.run_with_hooks(ids, interventions=[ScaleAttention(0, [0], 2, redistribute="renormalize")])
    _ren = m.run_with_hooks(ids, interventions=[ScaleAttention(0, [0], np.int64(2), redistribute="renormalize")])
    torch.testing.assert_close(ren, _ren)


def test_good_mean_value_and_heads_still_work(m, ids):
    """mean_value of the right shape with mode='mean' is used; numpy ints and integer arrays name heads like ints."""
    mv = torch.randn(H, D, generator=torch.Generator().manual_seed(1))
    got = m.run_with_hooks(ids, interventions=[HeadAblation(0, [1], mode="mean", mean_value=mv)])

    def put(z, hook):
        z = z.clone()
        z[:, :, 1] = mv[1]
        return z

    torch.testing.assert_close(got, m.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z", put)]))
    for heads in ([np.int64(1)], torch.tensor([1]), torch.tensor(1), np.array([1])):
        _same(m, ids, HeadAblation(0, heads), HeadAblation(0, 1))
