"""Gradients through the wrapped model: grad_of caches, backward hooks, HeadMask, interventions by stage."""

import pytest
import torch

import interp
from interp import HeadAblation, HeadMask, HookedModel, Intervention
from helpers import tiny_llama

L, H = 2, 4


@pytest.fixture(scope="module")
def model():
    return HookedModel(tiny_llama(n_layers=L, n_heads=H, n_kv_heads=2, d_model=64, vocab=100), name="tiny")


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1, 100, (3, 11), generator=torch.Generator().manual_seed(0))


def last_logit(target=7):
    return lambda logits: logits[:, -1, target].mean()


def test_grad_of_matches_finite_difference(model, ids):
    name = "blocks.0.attn.hook_z"
    logits, cache, grads = model.run_with_cache(ids, names=[name], grad_of=last_logit())
    g = grads[name]
    assert g.shape == cache[name].shape == (3, 11, H, 16)
    assert not logits.requires_grad and grads.metric == pytest.approx(float(logits[:, -1, 7].mean()), rel=1e-5)
    # perturb one coordinate of hook_z in a fresh forward: the metric moves by ~ eps * gradient
    eps = 1e-2
    for (bi, pos, hh, d) in [(0, 10, 1, 3), (2, 4, 3, 0), (1, 0, 0, 15)]:
        def bump(z, hook, bi=bi, pos=pos, hh=hh, d=d):
            z = z.clone()
            z[bi, pos, hh, d] += eps
            return z
        up = last_logit()(model.run_with_hooks(ids, fwd_hooks=[(name, bump)]))
        fd = (float(up) - grads.metric) / eps
        assert fd == pytest.approx(float(g[bi, pos, hh, d]), rel=0.05, abs=2e-4)


def test_mask_gradient_is_chain_rule_of_z_gradient(model, ids):
    """d M / d xi_h at xi = 1 equals sum over (batch, pos, d) of z_h * dM/dz'_h -- two independent code paths."""
    xi = torch.ones(L, H, requires_grad=True)
    logits = model.run_with_hooks(ids, interventions=[HeadMask(xi)])
    assert logits.requires_grad
    last_logit()(logits).backward()
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    _, cache, grads = model.run_with_cache(ids, names=names, grad_of=last_logit())
    for l in range(L):
        expect = (cache[names[l]] * grads[names[l]]).sum((0, 1, 3))
        torch.testing.assert_close(xi.grad[l], expect, rtol=1e-4, atol=1e-6)
    assert xi.grad.abs().sum() > 0
    for p in model.model.parameters():  # weights are frozen: nothing accumulates there
        assert p.grad is None


def test_head_mask_values(model, ids):
    base = model(ids)
    torch.testing.assert_close(model.run_with_hooks(ids, interventions=[HeadMask(torch.ones(L, H))]), base)
    xi = torch.ones(L, H)
    xi[1, 2] = 0
    masked = model.run_with_hooks(ids, interventions=[HeadMask(xi)])
    ablated = model.run_with_hooks(ids, interventions=[HeadAblation(layer=1, heads=[2])])
    torch.testing.assert_close(masked, ablated)
    assert (masked - base).abs().max() > 1e-4
    mean_masked = model.run_with_hooks(ids, interventions=[HeadMask(xi, baseline="mean")])
    mean_ablated = model.run_with_hooks(ids, interventions=[HeadAblation(layer=1, heads=[2], mode="mean")])
    torch.testing.assert_close(mean_masked, mean_ablated)


def test_batched_head_mask_equals_one_forward_per_head(model, ids):
    """A sweep over every head as one batch: row group i ablates head i."""
    x = ids[:1]
    n = L * H
    xi = torch.ones(n, L, H)
    for i in range(n):
        xi[i, i // H, i % H] = 0
    batched = model.run_with_hooks(x.expand(n, -1), interventions=[HeadMask(xi)])
    for i in range(n):
        one = model.run_with_hooks(x, interventions=[HeadAblation(layer=i // H, heads=[i % H])])
        torch.testing.assert_close(batched[i:i + 1], one, rtol=1e-4, atol=1e-5)


def test_head_mask_patches_given_activations(model, ids):
    """baseline={layer: z_corrupt}, xi = 0 on one head == replacing that head's z by a hook (activation patching)."""
    corrupt = torch.randint(1, 100, ids.shape, generator=torch.Generator().manual_seed(5))
    name = "blocks.0.attn.hook_z"
    _, cc = model.run_with_cache(corrupt, names=[name])
    xi = torch.ones(L, H)
    xi[0, 1] = 0
    patched = model.run_with_hooks(ids, interventions=[HeadMask(xi, baseline={0: cc[name]})])

    def replace(z, hook):
        z = z.clone()
        z[:, :, 1] = cc[name][:, :, 1]
        return z

    torch.testing.assert_close(patched, model.run_with_hooks(ids, fwd_hooks=[(name, replace)]))


def test_backward_hooks_see_and_replace_gradients(model, ids):
    seen = {}

    def record(g, hook):
        seen[hook.name] = g.clone()

    def kill(g, hook):
        return torch.zeros_like(g)

    xi = torch.ones(L, H, requires_grad=True)
    logits = model.run_with_hooks(ids, interventions=[HeadMask(xi)],
                                  bwd_hooks=[("blocks.1.attn.hook_z", record), ("blocks.1.hook_resid_pre", kill)])
    last_logit()(logits).backward()
    assert seen["blocks.1.attn.hook_z"].shape == (3, 11, H, 16)
    assert xi.grad[1].abs().sum() > 0
    assert xi.grad[0].abs().sum() == 0  # the gradient into layer 1's input was replaced by zero


def test_custom_intervention_at_a_new_stage(model, ids):
    """A new intervention is a class with a stage and a method; HookedModel needs no edit."""

    class ScaleResid(Intervention):
        stages = ("resid_post",)

        def __init__(self, layer, factor):
            self.layer, self.factor = layer, factor

        def validate(self, n_layers, n_heads):
            pass

        def resid(self, stage, x, layer, valid):
            return x * self.factor

    def scale(x, hook):
        return x * 0.5

    a = model.run_with_hooks(ids, interventions=[ScaleResid(0, 0.5)])
    b = model.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_resid_post", scale)])
    torch.testing.assert_close(a, b)
    assert (a - model(ids)).abs().max() > 1e-3


def test_pattern_gradient(model, ids):
    name = "blocks.1.attn.hook_pattern"
    z = "blocks.1.attn.hook_z"
    _, cache, grads = model.run_with_cache(ids, names=[name, z], grad_of=last_logit())
    _, _, ref = model.run_with_cache(ids, names=[z], grad_of=last_logit())
    torch.testing.assert_close(grads[z], ref[z])
    g = grads[name]
    assert g.shape == cache[name].shape and g.abs().sum() > 0
    # future keys have no path to the output (causal), so their gradient is zero
    assert g[:, :, 0, 1:].abs().max() == 0


def test_gradient_errors(model, ids):
    with pytest.raises(ValueError, match="scalar"):
        model.run_with_cache(ids, names=["blocks.0.attn.hook_z"], grad_of=lambda lg: lg[:, -1, :3])
    with pytest.raises(ValueError, match="names"):
        model.run_with_cache(ids, grad_of=last_logit())
    with pytest.raises(TypeError, match="grad_of"):
        model.run_with_cache(ids, names=["blocks.0.attn.hook_z"], grad_of="loss")
    with pytest.raises(ValueError, match="no gradient"):
        model.run_with_hooks(ids, bwd_hooks=[("blocks.0.attn.hook_key_mass", lambda g, h: None)])
    with pytest.raises(ValueError, match="NaN/Inf"):
        model.run_with_cache(ids, names=["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"],
                             grad_of=lambda lg: (lg[:, -1, 0] * float("nan")).mean())
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        model.run_with_hooks(ids, interventions=[HeadMask(torch.ones(3, 4))])
    with pytest.raises(TypeError, match="floating"):
        model.run_with_hooks(ids, interventions=[HeadMask(torch.ones(2, 4, dtype=torch.long))])
    with pytest.raises(ValueError, match="baseline"):
        model.run_with_hooks(ids, interventions=[HeadMask(torch.ones(2, 4), baseline="median")])
    with pytest.raises(ValueError, match="batch 5"):
        model.run_with_hooks(ids, interventions=[HeadMask(torch.ones(5, 2, 4))])
    with pytest.raises(TypeError, match="unknown intervention"):
        model.run_with_hooks(ids, interventions=[object()])


def test_toy_induction_gradients_point_at_the_known_heads():
    """On the induction toy, |dLoss/dxi| is largest for the previous-token head L0H3 and the layer-1 heads."""
    m = interp.load("toy-induction")
    g = torch.Generator().manual_seed(0)
    r = torch.randint(1, m.cfg.d_vocab, (8, 20), generator=g)
    ids = torch.cat([torch.zeros(8, 1, dtype=torch.long), r, r], 1)

    def loss(logits):
        lp = logits[:, 20:-1].log_softmax(-1)
        return -lp.gather(-1, ids[:, 21:, None]).mean()

    xi = torch.ones(m.cfg.n_layers, m.cfg.n_heads, requires_grad=True)
    loss(m.run_with_hooks(ids, interventions=[HeadMask(xi)])).backward()
    imp = xi.grad.abs()
    assert imp[0].argmax() == 3, imp
    assert imp[0, 3] > imp[0, :3].max() * 3


def test_triton_backend_gradients_equal_reference(ids, device):
    """The same model through the Triton kernels (forward + backward; interpreter on CPU) and the reference."""
    ref = HookedModel(tiny_llama(n_layers=L, n_heads=H, n_kv_heads=2, d_model=64, vocab=100).to(device),
                      backend="reference")
    tri = HookedModel(tiny_llama(n_layers=L, n_heads=H, n_kv_heads=2, d_model=64, vocab=100).to(device),
                      backend="triton")
    ids = ids.to(device)
    names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.1.attn.hook_v", "hook_embed"]
    grads = []
    for m in (ref, tri):
        xi = torch.ones(L, H, device=device, requires_grad=True)
        last_logit()(m.run_with_hooks(ids, interventions=[HeadMask(xi)])).backward()
        _, _, g = m.run_with_cache(ids, names=names, grad_of=last_logit())
        grads.append((xi.grad, g))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-3, atol=1e-5)
    for n in names:
        torch.testing.assert_close(grads[1][1][n], grads[0][1][n], rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
def test_a_cpu_head_mask_gates_a_model_on_the_gpu():
    """HeadMask moves its mask and a baseline dict's tensors to hook_z's device (round 22's sweep): a mask made on the
    CPU gives a CUDA model the logits of the same mask made on the GPU, and its gradient reaches the CPU leaf."""
    model = interp.load("toy-induction", device="cuda")
    L, H, dh = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head
    ids = torch.randint(0, model.cfg.d_vocab, (2, 13), generator=torch.Generator().manual_seed(0)).cuda()
    xi_cpu = torch.rand(L, H, generator=torch.Generator().manual_seed(1)).requires_grad_()
    xi_gpu = xi_cpu.detach().cuda().requires_grad_()
    a = model.run_with_hooks(ids, interventions=[HeadMask(xi_cpu)])
    b = model.run_with_hooks(ids, interventions=[HeadMask(xi_gpu)])
    torch.testing.assert_close(a, b)
    a[:, -1].sum().backward()
    b[:, -1].sum().backward()
    assert xi_cpu.grad.device.type == "cpu"
    torch.testing.assert_close(xi_cpu.grad, xi_gpu.grad.cpu(), rtol=1e-4, atol=1e-5)
    base = {1: torch.randn(1, 1, H, dh, generator=torch.Generator().manual_seed(2))}
    c = model.run_with_hooks(ids, interventions=[HeadMask(xi_cpu.detach(), baseline=base)])
    d = model.run_with_hooks(ids, interventions=[HeadMask(xi_gpu.detach(), baseline={1: base[1].cuda()})])
    torch.testing.assert_close(c, d)
    assert (c - a.detach()).abs().max() > 1e-4  # the baseline acts


def test_hook_result_has_no_gradient_and_says_so(model, ids):
    result, z = "blocks.1.attn.hook_result", "blocks.1.attn.hook_z"
    with pytest.raises(ValueError, match=r"hook_result.*no gradient.*from hook_z and W_O.*'blocks\.1\.attn\.hook_z'"):
        model.run_with_cache(ids, names=[result], grad_of=last_logit())
    with pytest.raises(ValueError, match="statistics"):  # statistics named alone: no gradient either
        model.run_with_cache(ids, names=["blocks.0.attn.hook_query_entropy"], grad_of=last_logit())
    _, cache, grads = model.run_with_cache(ids, names=[result, z], grad_of=last_logit())
    assert result in cache and grads[z].shape == cache[z].shape
    with pytest.raises(KeyError, match="has no gradient.*hook_z"):  # captured, but without a gradient
        grads[result]
    with pytest.raises(KeyError, match="was not captured"):
        grads["blocks.0.attn.hook_z"]
