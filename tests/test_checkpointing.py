"""Block checkpointing (`checkpoint=True`): the same gradients for a fraction of the saved memory."""

import pytest
import torch

from interp import HeadMask, HookedModel
from helpers import tiny_gemma3, tiny_gpt2, tiny_llama

BUILDERS = {"llama": lambda: tiny_llama(n_layers=3), "gemma3": tiny_gemma3, "gpt2": tiny_gpt2}


def _ids(model, b=2, n=11, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, model.cfg.d_vocab, (b, n), generator=g)


def _metric(lg):  # [batch, pos, vocab] -> scalar
    return lg[:, -1, 3].sum() - lg[:, -1, 5].sum() + lg[:, 5, 7].sum()


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_checkpointed_grad_of_equals_plain(arch):
    """grad_of through checkpointed blocks gives the plain run's activations and gradients, with a head mask
    (an intervention inside the blocks that the recomputation must apply again) and a padded row."""
    m = HookedModel(BUILDERS[arch]())
    ids = _ids(m)
    toks = [ids[0].tolist(), ids[1, 3:].tolist()]  # rows of unequal length: the recomputation needs the padding mask
    L, H = m.cfg.n_layers, m.cfg.n_heads
    xi = torch.linspace(0.3, 1.2, L * H).reshape(L, H)
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)] + [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [
        f"blocks.{L - 1}.hook_mlp_out"]
    runs = {}
    for ck in (False, True):
        runs[ck] = m.run_with_cache(toks, names=names, grad_of=_metric, interventions=[HeadMask(xi)], checkpoint=ck)
    (lg0, c0, g0), (lg1, c1, g1) = runs[False], runs[True]
    torch.testing.assert_close(lg1, lg0)
    assert g1.metric == pytest.approx(g0.metric)
    for n in names:
        torch.testing.assert_close(c1[n], c0[n], msg=n)
        torch.testing.assert_close(g1[n], g0[n], atol=1e-6, rtol=1e-5, msg=n)
        assert g0[n].abs().sum() > 0 or n.endswith("hook_resid_pre"), n


def test_checkpointed_mask_gradient_and_backward_hooks_once():
    """run_with_hooks(checkpoint=True): the head-mask gradient equals the plain one; a backward hook fires once per
    hook point (not again for the recomputation), its replacement gradient is honoured."""
    m = HookedModel(tiny_llama(n_layers=3))
    ids = _ids(m, b=3, n=9)
    L, H = m.cfg.n_layers, m.cfg.n_heads
    grads, calls = {}, {}
    for ck in (False, True):
        xi = torch.ones(L, H, requires_grad=True)
        seen = []

        def halve(g, hook, seen=seen):
            seen.append(hook.name)
            return g * 0.5

        lg = m.run_with_hooks(ids, interventions=[HeadMask(xi)], checkpoint=ck,
                              bwd_hooks=[("blocks.1.attn.hook_z", halve)])
        _metric(lg).backward()
        grads[ck], calls[ck] = xi.grad.clone(), seen
    torch.testing.assert_close(grads[True], grads[False], atol=1e-6, rtol=1e-5)
    assert calls[True] == calls[False] == ["blocks.1.attn.hook_z"]


def test_checkpointed_forward_hooks_rerun_in_the_backward():
    """Documented: hooks inside a block run again when the backward recomputes it (so they must be deterministic);
    a writable hook's replacement is applied in the recomputation too (same gradient as without checkpointing)."""
    m = HookedModel(tiny_llama(n_layers=2))
    ids = _ids(m, b=1, n=7)
    out = {}
    for ck in (False, True):
        count = [0]

        def scale(v, hook, count=count):
            count[0] += 1
            return v * 2.0

        xi = torch.ones(2, m.cfg.n_heads, requires_grad=True)
        lg = m.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_v", scale)], interventions=[HeadMask(xi)],
                              checkpoint=ck)
        _metric(lg).backward()
        out[ck] = (count[0], xi.grad.clone())
    assert out[False][0] == 1 and out[True][0] == 2
    torch.testing.assert_close(out[True][1], out[False][1], atol=1e-6, rtol=1e-5)


def test_checkpoint_keeps_block_inputs_only():
    """What autograd saves for the backward: without checkpointing every block's insides; with it, each block's
    input only (d_model float32 per token and block; the rotary tables are shared)."""
    ids = torch.randint(1, 100, (1, 64), generator=torch.Generator().manual_seed(0))

    def saved_bytes(n_layers, ck):
        m = HookedModel(tiny_llama(n_layers=n_layers, d_model=64))
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            _, _, g = m.run_with_cache(ids, names=["blocks.0.hook_resid_pre"], grad_of=lambda lg: lg[0, -1, 3],
                                       logits_at=[63], checkpoint=ck)
        assert g["blocks.0.hook_resid_pre"].abs().sum() > 0
        weights = {p.untyped_storage().data_ptr() for p in m.model.parameters()}
        return sum(v for k, v in seen.items() if k not in weights)

    plain = {n: saved_bytes(n, False) for n in (2, 6)}
    ck = {n: saved_bytes(n, True) for n in (2, 6)}
    per_block = (plain[6] - plain[2]) / 4
    assert per_block > 64 * 64 * 4 * 8, plain  # a block's insides: many [64 tokens, 64+] float32 tensors
    assert ck[6] - ck[2] == 4 * 64 * 64 * 4, ck  # 4 more blocks: 4 more [64 tokens, 64] float32 inputs


def test_checkpoint_argument_checked():
    m = HookedModel(tiny_llama(n_layers=1))
    with pytest.raises(TypeError, match="checkpoint must be True or False"):
        m.run_with_hooks(_ids(m), checkpoint="yes")


def test_checkpoint_restores_block_forwards():
    m = HookedModel(tiny_llama(n_layers=2))
    before = [vars(b).get("forward") for b in m.blocks]
    m.run_with_cache(_ids(m), names=["blocks.0.attn.hook_z"], grad_of=_metric, checkpoint=True)
    assert [vars(b).get("forward") for b in m.blocks] == before
    with pytest.raises(ValueError):
        m.run_with_cache(_ids(m), names=["blocks.0.attn.hook_z"], grad_of=lambda lg: lg, checkpoint=True)
    assert [vars(b).get("forward") for b in m.blocks] == before


def test_checkpointed_triton_backend_equals_plain():
    """The Triton autograd path (interpreter on CPU) under checkpointing: its saved q/k/v/out/lse are recomputed."""
    m = HookedModel(tiny_llama(n_layers=2), backend="triton")
    ids = _ids(m, b=2, n=13)
    names = ["blocks.0.attn.hook_q", "blocks.1.attn.hook_v", "hook_embed"]
    got = [m.run_with_cache(ids, names=names, grad_of=_metric, checkpoint=ck)[2] for ck in (False, True)]
    for n in names:
        torch.testing.assert_close(got[1][n], got[0][n], atol=1e-6, rtol=1e-5, msg=n)


@pytest.mark.parametrize("ck", [False, True])
def test_attention_calls_are_freed_without_the_garbage_collector(ck):
    """Each layer's AttnCall (holding its q/k/v) dies with the run by reference counting alone: a reference cycle
    would keep every layer's q/k/v until the collector ran (Gemma 3 at 16k tokens: ~1.8 GB per forward)."""
    import gc
    import weakref

    from interp import Intervention

    class Spy(Intervention):
        stages = ("qkv",)

        def __init__(self):
            self.refs = []

        def validate(self, n_layers, n_heads):
            pass

        def layers(self, n_layers):
            return list(range(n_layers))

        def qkv(self, q, k, v, call):
            self.refs.append(weakref.ref(call))
            return q, k, v

    m = HookedModel(tiny_llama(n_layers=2))
    ids = _ids(m)
    spy = Spy()
    gc.collect()
    gc.disable()
    try:
        with torch.no_grad():
            m.run_with_hooks(ids, interventions=[spy])
        m.run_with_cache(ids, names=["blocks.1.attn.hook_z"], grad_of=_metric, interventions=[spy], checkpoint=ck)
        assert len(spy.refs) >= 4 and all(r() is None for r in spy.refs), [r() is None for r in spy.refs]
    finally:
        gc.enable()
