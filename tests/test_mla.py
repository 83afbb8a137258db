"""Multi-head latent attention end to end: a tiny random DeepSeek-V3 (q/k heads of 16 + 8 = 24, value heads of 12)
wrapped by HookedModel on both backends, against transformers' eager attention: logits, statistics, hook shapes,
per-head results, head masks and ablations, direct logit attribution, node outputs, gradients and greedy generation
with a KV cache. Kernel-level tests of a value head dim other than q/k's are in test_mla_kernels.py."""

from __future__ import annotations

import os

import pytest
import torch

import interp
from interp.config import ModelConfig
from interp.head_inputs import head_weights, node_outputs
from interp.hooks import HOOK_OF_STAT
from interp.kernels import stats_from_pattern
from interp.readout import logit_attribution

BACKENDS = ("reference", "triton")
# CPU models: the Triton backend runs in the interpreter (CI sets TRITON_INTERPRET=1)
CPU_TRITON = pytest.mark.skipif(not os.environ.get("TRITON_INTERPRET") and torch.cuda.is_available(),
                                reason="CPU models: the Triton kernels run in the interpreter (TRITON_INTERPRET=1)")
pytestmark = CPU_TRITON
H, D_QK, D_V = 4, 24, 12
TOL = dict(atol=2e-5, rtol=2e-5)


def tiny_deepseek_v3(seed=0):
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(seed)
    cfg = DeepseekV3Config(
        vocab_size=64, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=H, num_key_value_heads=H, n_shared_experts=1, n_routed_experts=4, num_experts_per_tok=2,
        n_group=1, topk_group=1, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8,
        qk_nope_head_dim=16, v_head_dim=D_V, max_position_embeddings=128)
    return DeepseekV3ForCausalLM(cfg).float().eval()


@pytest.fixture(scope="module")
def deepseek():
    return interp.HookedModel(tiny_deepseek_v3(), backend="reference")


@pytest.fixture
def model(deepseek, request):
    deepseek.backend = request.param
    yield deepseek
    deepseek.backend = "reference"


def _ids(b=2, n=7, seed=1):
    return torch.randint(0, 64, (b, n), generator=torch.Generator().manual_seed(seed))


def _eager(m, ids, attention_mask=None, hook=None):
    """transformers' eager forward of the wrapped model (attention weights included); `hook`: a forward pre-hook
    installed on every layer's o_proj for the run."""
    hf = m.model
    handles = [a.o_proj.register_forward_pre_hook(hook) for a in m.attn_modules] if hook else []
    hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return hf(input_ids=ids, attention_mask=attention_mask, output_attentions=True)
    finally:
        hf.set_attn_implementation("interp")
        for h in handles:
            h.remove()


def test_config_reads_deepseek_head_dims(deepseek):
    """DeepseekV3Config.head_dim is the rope part (8): q/k heads are qk_nope + qk_rope = 24, value heads 12."""
    c = deepseek.cfg
    assert deepseek.model.config.head_dim == 8
    assert (c.d_head, c.d_head_v, c.is_mla) == (D_QK, D_V, True)
    assert "d_head 24, d_head_v 12" in repr(deepseek)
    from transformers import DeepseekV2Config, LlamaConfig

    v2 = ModelConfig.from_hf(DeepseekV2Config(hidden_size=64, num_attention_heads=4, qk_nope_head_dim=32,
                                              qk_rope_head_dim=16, v_head_dim=24, num_hidden_layers=1))
    assert (v2.d_head, v2.d_head_v) == (48, 24)
    llama = ModelConfig.from_hf(LlamaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1))
    assert (llama.d_head, llama.d_head_v, llama.is_mla) == (16, 16, False)


@pytest.mark.parametrize("model", BACKENDS, indirect=True)
def test_logits_equal_eager(model):
    ids = _ids()
    torch.testing.assert_close(model(ids), _eager(model, ids).logits, **TOL)
    # a right-padded batch: the real positions of each row
    got = model.run_with_hooks([ids[0].tolist(), ids[1, :4].tolist()])  # right-padded by to_tokens
    want = _eager(model, ids, torch.tensor([[1] * 7, [1] * 4 + [0] * 3])).logits
    torch.testing.assert_close(got[0], want[0], **TOL)
    torch.testing.assert_close(got[1, :4], want[1, :4], **TOL)


@pytest.mark.parametrize("model", BACKENDS, indirect=True)
def test_cache_shapes_and_statistics_equal_eager_patterns(model):
    ids = _ids()
    names = [f"blocks.{l}.attn.hook_{x}" for l in range(2) for x in ("q", "k", "v", "z", "result")]
    logits, cache = model.run_with_cache(ids, names=names, stats="all", span=(1, 4))
    ref = _eager(model, ids)
    torch.testing.assert_close(logits, ref.logits, **TOL)
    for l in range(2):
        pre = f"blocks.{l}.attn."
        assert cache[pre + "hook_q"].shape == (2, 7, H, D_QK) and cache[pre + "hook_k"].shape == (2, 7, H, D_QK)
        assert cache[pre + "hook_v"].shape == (2, 7, H, D_V) and cache[pre + "hook_z"].shape == (2, 7, H, D_V)
        assert cache[pre + "hook_result"].shape == (2, 7, H, 64)
        want = stats_from_pattern(ref.attentions[l].float(), "all", span=(1, 4))
        for name, t in want.items():
            torch.testing.assert_close(cache[pre + HOOK_OF_STAT[name]], t, atol=1e-5, rtol=1e-5,
                                       equal_nan=True, msg=f"layer {l} {name}")


def test_edited_pattern_times_v(deepseek):
    """A hook that replaces hook_pattern (reference backend): the output is recomputed as pattern @ v with v's
    head dim; a pattern given back unchanged leaves the logits alone, one that sends all of layer 1's attention to
    key 0 gives z = v[key 0]."""
    ids = _ids()
    want = _eager(deepseek, ids).logits
    same = deepseek.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_pattern", lambda p, hook: p.clone())])
    torch.testing.assert_close(same, want, **TOL)

    def first_key(p, hook):
        out = torch.zeros_like(p)
        out[..., 0] = 1.0
        return out

    got = {}
    hooks = [("blocks.1.attn.hook_pattern", first_key),
             ("blocks.1.attn.hook_v", lambda t, hook: got.__setitem__("v", t.clone())),
             ("blocks.1.attn.hook_z", lambda t, hook: got.__setitem__("z", t.clone()))]
    deepseek.run_with_hooks(ids, fwd_hooks=hooks)
    assert got["z"].shape == (2, 7, H, D_V)
    torch.testing.assert_close(got["z"], got["v"][:, :1].expand(2, 7, H, D_V), **TOL)


@pytest.mark.parametrize("model", BACKENDS, indirect=True)
def test_head_results_add_up_to_the_attention_output(model):
    """sum over heads of hook_result (z_h W_O^h, W_O split into heads of d_head_v = 12) + o_proj's bias = the
    attention output; node_outputs' head contributions are the same."""
    ids = _ids()
    names = [f"blocks.{l}.{x}" for l in range(2) for x in ("attn.hook_result", "attn.hook_z", "hook_attn_out")]
    _, cache = model.run_with_cache(ids, names=names)
    outs = node_outputs(model, ids)
    for l in range(2):
        o_proj = model.attn_modules[l].o_proj
        bias = 0 if o_proj.bias is None else o_proj.bias
        total = cache[f"blocks.{l}.attn.hook_result"].sum(2) + bias
        torch.testing.assert_close(total, cache[f"blocks.{l}.hook_attn_out"], **TOL)
        assert head_weights(model, l).shape == (H, D_V, 64)
        torch.testing.assert_close(outs[("head", l)], cache[f"blocks.{l}.attn.hook_result"], **TOL)


@pytest.mark.parametrize("model", BACKENDS, indirect=True)
def test_input_patch_reads_each_head_from_its_own_stream(model):
    """InputPatch on MLA (q, k and v come from shared latent projections: the per-head projection shortcut is
    skipped): one delta for every q, k and v slot of layer 1 equals adding it to what layer 1's attention reads
    (its input norm's input), the residual path untouched; a single v slot changes the logits."""
    from interp.head_inputs import InputPatch

    ids = _ids()
    delta = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(2))
    every = {**{("q", h): delta for h in range(H)}, **{(x, j): delta for x in "kv" for j in range(H)}}
    got = InputPatch(model, lambda l, part, p: every if (l, part) == (1, "attn") else {}).run(model, ids)
    norm = model.blocks[1].input_layernorm
    handle = norm.register_forward_pre_hook(lambda mod, args: (args[0] + delta,))
    try:
        want = _eager(model, ids).logits
    finally:
        handle.remove()
    torch.testing.assert_close(got, want, **TOL)
    one = InputPatch(model, lambda l, part, p: {("v", 2): delta} if (l, part) == (1, "attn") else {}).run(model, ids)
    assert not torch.allclose(one, model(ids), atol=1e-4)


@pytest.mark.parametrize("model", BACKENDS, indirect=True)
def test_input_gradients_are_the_slope_of_input_patches(model):
    """input_gradients' d metric / d (the stream one head's q, k or v reads) is the slope of InputPatch with a small
    delta on that slot alone (central differences; the delta a few % of the residual's size, where the norms are
    nearly linear): per-head inputs mean the same thing to both on MLA."""
    from interp.head_inputs import InputPatch, input_gradients

    ids = _ids()

    def metric(logits):
        return logits[:, -1, 5].sum()

    _, grads = input_gradients(model, ids, metric, mlp=False, layers=[1])
    delta = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(6)) * 0.02  # embeddings: std 0.02
    eps = 3e-2
    for kind, j in (("v", 2), ("k", 1), ("q", 3)):
        def at(scale):
            fn = lambda l, part, p: {(kind, j): scale * delta} if (l, part) == (1, "attn") else {}  # noqa: E731
            with torch.no_grad():
                return metric(InputPatch(model, fn).run(model, ids)).item()

        slope = (at(eps) - at(-eps)) / (2 * eps)
        want = (grads[(kind, 1)][j] * delta).sum().item()
        assert abs(slope - want) <= 1e-2 * abs(want) + 1e-6, (kind, j, slope, want)


def _edit_head_inputs(layer: int, edit):
    """An o_proj pre-hook for `_eager` that rewrites layer `layer`'s z ([batch, pos, heads, d_head_v]) by edit(z)."""
    def hook(module, args):
        if module is not _edit_head_inputs.o_projs[layer]:
            return None
        x = args[0]
        z = edit(x.reshape(*x.shape[:-1], H, D_V).clone())
        return (z.reshape(x.shape),)
    return hook


@pytest.mark.parametrize("model", BACKENDS, indirect=True)
def test_head_mask_and_ablation_match_hand_edits(model):
    """HeadMask zeroing head 1 of layer 0 and a mean HeadAblation of head 2 in layer 1 equal eager runs whose
    o_proj input (the heads' z side by side, 12 columns each) is edited by hand."""
    ids = _ids()
    _edit_head_inputs.o_projs = [a.o_proj for a in model.attn_modules]
    xi = torch.ones(2, H)
    xi[0, 1] = 0.0
    got = model.run_with_hooks(ids, interventions=[interp.HeadMask(xi)])

    def zero_head_1(z):
        z[:, :, 1] = 0
        return z

    torch.testing.assert_close(got, _eager(model, ids, hook=_edit_head_inputs(0, zero_head_1)).logits, **TOL)
    # activation patching: head 1 of layer 0 gets another input's z (a baseline [batch, pos, head, d_head_v])
    _, other = model.run_with_cache(_ids(seed=9), names=["blocks.0.attn.hook_z"])
    z_other = other["blocks.0.attn.hook_z"]
    got = model.run_with_hooks(ids, interventions=[interp.HeadMask(xi, baseline={0: z_other}, only_layers=[0])])

    def patch_head_1(z):
        z[:, :, 1] = z_other[:, :, 1]
        return z

    torch.testing.assert_close(got, _eager(model, ids, hook=_edit_head_inputs(0, patch_head_1)).logits, **TOL)

    got = model.run_with_hooks(ids, interventions=[interp.HeadAblation(layer=1, heads=[2], mode="mean")])

    def mean_head_2(z):
        z[:, :, 2] = z[:, :, 2].mean((0, 1))
        return z

    torch.testing.assert_close(got, _eager(model, ids, hook=_edit_head_inputs(1, mean_head_2)).logits, **TOL)
    mean_value = torch.randn(H, D_V)
    got = model.run_with_hooks(ids, interventions=[interp.HeadAblation(layer=1, heads=[0], mode="mean",
                                                                       mean_value=mean_value)])

    def given_head_0(z):
        z[:, :, 0] = mean_value[0]
        return z

    torch.testing.assert_close(got, _eager(model, ids, hook=_edit_head_inputs(1, given_head_0)).logits, **TOL)
    with pytest.raises(ValueError, match=r"mean_value must be \[n_heads, d_head_v\] = \[4, 12\]"):
        model.run_with_hooks(ids, interventions=[interp.HeadAblation(layer=1, heads=[0], mode="mean",
                                                                     mean_value=torch.zeros(H, D_QK))])


@pytest.mark.parametrize("model", BACKENDS, indirect=True)
def test_direct_logit_attribution_adds_up(model):
    """Heads (W_O split into heads of 12), MLPs and the embedding add up to the logit difference, which is the
    model's own logit difference (RMSNorm, no biases)."""
    ids = _ids()
    directions = torch.stack([ids.roll(-1, 1), (ids + 1) % 64], -1)  # [batch, pos, 2]
    att = logit_attribution(model, ids, directions)
    assert att.heads.shape == (2, 7, 2, H)
    torch.testing.assert_close(att.total(), att.target, atol=1e-4, rtol=1e-4)
    logits = _eager(model, ids).logits
    diff = logits.gather(-1, directions[..., :1]) - logits.gather(-1, directions[..., 1:])
    torch.testing.assert_close(att.target, diff[..., 0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model", BACKENDS, indirect=True)
def test_gradients_flow_through_the_padded_kernels(model):
    """grad_of through MLA attention: gradients at hook_q/k/v/z of either backend agree with the reference's, and
    hook_v's and hook_z's have the value head dim."""
    ids = _ids()
    names = [f"blocks.{l}.attn.hook_{x}" for l in range(2) for x in "qkvz"]

    def metric(logits):
        return logits[:, -1].log_softmax(-1)[:, 3].sum()

    _, _, grads = model.run_with_cache(ids, names=names, grad_of=metric)
    backend = model.backend
    model.backend = "reference"
    try:
        _, _, want = model.run_with_cache(ids, names=names, grad_of=metric)
    finally:
        model.backend = backend
    for n in names:
        assert grads[n].shape[-1] == (D_V if n.endswith(("hook_v", "hook_z")) else D_QK), n
        torch.testing.assert_close(grads[n], want[n], atol=1e-5, rtol=1e-4, msg=n)
    assert grads["blocks.0.attn.hook_v"].abs().sum() > 0


def _generate_eager(m, inputs, **kw):
    """HookedModel.generate with transformers' eager attention (same tokenization and padding)."""
    m.model.set_attn_implementation("eager")
    try:
        return m.generate(inputs, **kw)
    finally:
        m.model.set_attn_implementation("interp")


@pytest.mark.parametrize("model", BACKENDS, indirect=True)
def test_greedy_generation_with_a_kv_cache_equals_eager(model):
    """generate (DeepSeek's cache keeps the latents; each decode step expands them into one query against every
    key): the same tokens as eager attention, with statistics hooks active too (the fused decode walk on Triton)."""
    ids = _ids(b=2, n=5, seed=4)
    want = _generate_eager(model, ids, max_new_tokens=4)
    torch.testing.assert_close(model.generate(ids, max_new_tokens=4), want)
    seen = []
    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_query_entropy", lambda t, hook: seen.append(t.shape))]):
        torch.testing.assert_close(model.generate(ids, max_new_tokens=4), want)
    assert seen[0] == (2, H, 5) and seen[1:] == [(2, H, 1)] * 3


@pytest.mark.parametrize("model", BACKENDS, indirect=True)
def test_static_cache_generation_from_a_padded_batch_equals_eager(model):
    """A left-padded batch through a static cache (its empty slots cut off, the padding masked)."""
    ids = _ids(b=2, n=5, seed=4)
    ragged = [ids[0].tolist(), ids[1, :3].tolist()]
    want = _generate_eager(model, ragged, max_new_tokens=4, cache_implementation="static")
    torch.testing.assert_close(model.generate(ragged, max_new_tokens=4, cache_implementation="static"), want)
