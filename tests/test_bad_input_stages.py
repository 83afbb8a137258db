"""Bad custom `Intervention` subclasses (interp.stages, a documented extension point): a ValueError/TypeError naming
the class, the stage or setting and what is allowed, raised before or at the stage (never a bare NotImplementedError,
an AttributeError, a traceback from inside torch/transformers, or an intervention that is silently never applied)."""

import numpy as np
import pytest
import torch

import interp
from interp import Intervention


@pytest.fixture(scope="module")
def m():
    return interp.load("toy-induction")  # 2 layers x 4 heads, d_head 16, d_model 64


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1, 64, (2, 8), generator=torch.Generator().manual_seed(0))


def iv(stages=("z",), **attrs):
    """An instance of a fresh subclass `A` with these stages and class attributes (methods as lambdas)."""
    return type("A", (Intervention,), {"stages": stages, **attrs})()


ZERO_Z = {"z": lambda self, z, call: z * 0}

CASES = [
    # --- settings checked before the run
    ("no layer attribute", iv(**ZERO_Z), TypeError,
     r"A has no `layer` attribute: an Intervention acts on the layer in its `layer` field \(set self.layer\), or on "
     r"the layers its `layers\(n_layers\)` method returns"),
    ("layer out of range", iv(layer=7, **ZERO_Z), ValueError,
     r"A.layer: layer 7 out of range; the model has layers 0..1"),
    ("layer negative", iv(layer=-1, **ZERO_Z), ValueError, r"A.layer: layer -1 out of range"),
    ("layer str", iv(layer="0", **ZERO_Z), TypeError, r"A.layer must be an int layer in 0..1, got '0'"),
    ("layer float", iv(layer=0.0, **ZERO_Z), TypeError, r"A.layer must be an int layer in 0..1, got 0.0"),
    ("layer bool", iv(layer=True, **ZERO_Z), TypeError, r"A.layer must be an int layer in 0..1, got True"),
    ("layers() str", iv(layers=lambda self, n: "01", **ZERO_Z), TypeError,
     r"A.layers\(2\) must be a non-empty list of distinct int layers in 0..1, got str '01'"),
    ("layers() int", iv(layers=lambda self, n: 1, **ZERO_Z), TypeError, r"A.layers\(2\) must be .*got int 1"),
    ("layers() empty", iv(layers=lambda self, n: [], **ZERO_Z), ValueError,
     r"A.layers\(2\) is empty, so A would act nowhere"),
    ("layers() out of range", iv(layers=lambda self, n: range(n + 1), **ZERO_Z), ValueError,
     r"A.layers\(2\): layer 2 out of range; the model has layers 0..1"),
    ("layers() repeated", iv(layers=lambda self, n: [0, 0], **ZERO_Z), ValueError,
     r"A.layers\(2\) repeats layer 0; each layer may appear once"),
    ("layers() float", iv(layers=lambda self, n: [0, 1.0], **ZERO_Z), TypeError,
     r"A.layers\(2\): layers must be ints, got 1.0"),
    ("stages a str", iv(stages="attn_out", layer=0, resid=lambda self, s, x, l, v: x), TypeError,
     r"A.stages must be a tuple of stage names from .*got 'attn_out'"),
    ("stage method missing", iv(layer=0), TypeError,
     r"A.stages names stage 'z' but A does not implement its method z\(self, z, call\)"),
    ("resid method missing", iv(stages=("mlp_out",), layer=0), TypeError,
     r"A.stages names stage 'mlp_out' but A does not implement its method resid\(self, stage, x, layer, valid\)"),
    # --- what the stage methods return
    ("z None", iv(layer=0, z=lambda self, z, call: None), ValueError,
     r"A.z \(stage 'z', layer 0\) returned None for z; it must return a tensor of z's shape \(2, 8, 4, 16\) = "
     r"\[batch, q_len, heads, d_head_v\]"),
    ("z sliced", iv(layer=1, z=lambda self, z, call: z[:, :3]), ValueError,
     r"A.z \(stage 'z', layer 1\) returned shape \(2, 3, 4, 16\) for z; it must return a tensor of z's shape"),
    ("z float64", iv(layer=0, z=lambda self, z, call: z.double()), ValueError,
     r"A.z \(stage 'z', layer 0\) returned a torch.float64 tensor on cpu for z; it must return a tensor of z's "
     r"dtype and device, torch.float32 on cpu \(cast with .to\(z.dtype\)"),
    ("resid_post sliced", iv(stages=("resid_post",), layer=0, resid=lambda self, s, x, l, v: x[:, :2]), ValueError,
     r"A.resid \(stage 'resid_post', layer 0\) returned shape \(2, 2, 64\) for x; it must return a tensor of x's "
     r"shape \(2, 8, 64\) = \[batch, pos, d_model\]"),
    ("resid_post None", iv(stages=("resid_post",), layer=0, resid=lambda self, s, x, l, v: None), ValueError,
     r"A.resid \(stage 'resid_post', layer 0\) returned None for x"),
    ("resid_pre list", iv(stages=("resid_pre",), layer=1, resid=lambda self, s, x, l, v: x.tolist()), ValueError,
     r"A.resid \(stage 'resid_pre', layer 1\) returned list for x"),
    ("attn_out float64", iv(stages=("attn_out",), layer=0, resid=lambda self, s, x, l, v: x.double()), ValueError,
     r"A.resid \(stage 'attn_out', layer 0\) returned a torch.float64 tensor"),
    ("qkv 2 items", iv(stages=("qkv",), layer=0, qkv=lambda self, q, k, v, call: (q, k)), ValueError,
     r"A.qkv \(stage 'qkv', layer 0\) returned 2 items; it must return a tuple \(q, k, v\)"),
    ("qkv None", iv(stages=("qkv",), layer=0, qkv=lambda self, q, k, v, call: None), ValueError,
     r"A.qkv \(stage 'qkv', layer 0\) returned None; it must return a tuple \(q, k, v\)"),
    ("qkv v sliced", iv(stages=("qkv",), layer=0, qkv=lambda self, q, k, v, call: (q, k, v[..., :4])), ValueError,
     r"A.qkv \(stage 'qkv', layer 0\) returned shape \(2, 4, 8, 4\) for v; it must return a tensor of v's shape "
     r"\(2, 4, 8, 16\)"),
    ("key_bias wrong shape", iv(stages=("key_bias",), layer=0, key_bias=lambda self, call: torch.zeros(8)),
     ValueError, r"A.key_bias \(stage 'key_bias', layer 0\) returned a torch.float32 tensor of shape \(8,\) on cpu; "
     r"it must return None or a floating-point tensor \[batch or 1, heads or 1, k_len\] = \[2, 4, 8\]"),
    ("key_bias bool", iv(stages=("key_bias",), layer=0,
                         key_bias=lambda self, call: torch.ones(1, 1, call.k_len, dtype=torch.bool)),
     ValueError, r"A.key_bias .* returned a torch.bool tensor"),
    ("probs sliced", iv(stages=("probs",), layer=0, probs=lambda self, p, qs, call: p[..., :2]), ValueError,
     r"A.probs \(stage 'probs', layer 0\) returned shape \(2, 4, 8, 2\) for p; it must return a tensor of p's shape "
     r"\(2, 4, 8, 8\) = \[batch, heads, chunk, k_len\]"),
    ("out float16", iv(stages=("out",), layer=0, out=lambda self, o, call: o.half()), ValueError,
     r"A.out \(stage 'out', layer 0\) returned a torch.float16 tensor on cpu for out"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_custom_intervention(m, ids, case):
    _, bad, exc, match = case
    with pytest.raises(exc, match=match):
        m.run_with_hooks(ids, interventions=[bad])


def test_validate_defaults_to_nothing_to_check(m, ids):
    """A subclass without `validate` (no settings of its own) runs: the layers are checked by the run."""
    a = m.run_with_hooks(ids, interventions=[iv(layer=1, **ZERO_Z)])
    b = m.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", lambda z, hook: z * 0)])
    torch.testing.assert_close(a, b)


def test_numpy_layers_and_good_returns(m, ids):
    """NumPy int layers are layers; returns of the right shape/dtype (a None key_bias, a broadcast bias) pass."""
    a = m.run_with_hooks(ids, interventions=[iv(layers=lambda self, n: np.arange(n), **ZERO_Z)])
    b = m.run_with_hooks(ids, interventions=[iv(layer=np.int64(0), **ZERO_Z), iv(layer=1, **ZERO_Z)])
    torch.testing.assert_close(a, b)
    plain = m.run_with_hooks(ids)
    c = m.run_with_hooks(ids, interventions=[
        iv(stages=("key_bias",), layer=0, key_bias=lambda self, call: None),
        iv(stages=("key_bias",), layer=0, key_bias=lambda self, call: torch.zeros(1, 1, call.k_len)),
        iv(stages=("qkv",), layer=1, qkv=lambda self, q, k, v, call: [q, k, v]),
    ])
    torch.testing.assert_close(c, plain)
