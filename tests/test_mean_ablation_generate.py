"""Mean ablation under generate: KV-cache decode steps reuse the mean taken on the prompt pass (a decode step's own
mean over its one new position would be the head's own output, leaving it unchanged)."""

import pytest
import torch

from interp import HeadAblation, HookedModel
from interp.head_mask import HeadMask
from helpers import tiny_llama

PROMPT = [[3, 17, 42, 8, 99, 23, 5]]
READ = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def m():
    return HookedModel(tiny_llama())


def mean_ablations(m):
    L, H = m.cfg.n_layers, m.cfg.n_heads
    return {"HeadAblation": lambda: HeadAblation(layer=0, heads=None, mode="mean"),
            "HeadMask": lambda: HeadMask(torch.zeros(L, H), baseline="mean", only_layers=[0])}


def generate_reading(m, interventions, prompt=PROMPT, steps=3):
    """Generated ids and READ at the last position of every forward generate ran (prompt pass, then decode steps)."""
    seen = []
    with m.hooks(interventions=interventions, fwd_hooks=[(READ, lambda t, hook: seen.append(t[:, -1].clone()))]):
        out = m.generate(prompt, max_new_tokens=steps)
    return out, torch.stack(seen, 1)  # [batch, forwards, d_model]


@pytest.mark.parametrize("kind", ["HeadAblation", "HeadMask"])
def test_generate_decode_steps_use_the_prompt_mean(m, kind):
    out, got = generate_reading(m, [mean_ablations(m)[kind]()])
    n = len(PROMPT[0])
    # reference without a cache: every position of prompt + generated tokens ablated to the prompt's mean hook_z
    _, c = m.run_with_cache(PROMPT, names=["blocks.0.attn.hook_z"])
    prompt_mean = c["blocks.0.attn.hook_z"][0].mean(0)  # [head, d_head_v]
    full = torch.cat([torch.tensor(PROMPT), out[:, :-1]], 1)
    _, ref = m.run_with_cache(full, names=[READ],
                              interventions=[HeadAblation(layer=0, heads=None, mode="mean", mean_value=prompt_mean)])
    want = ref[READ][:, n - 1:]  # the positions the prompt pass and each decode step end at
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    _, plain = generate_reading(m, [])
    assert (got[:, 1:] - plain[:, 1:]).abs().amax() > 1e-2  # decode steps are ablated, not left as they were


def test_padded_prompts_take_the_mean_over_real_tokens(m):
    prompts = [PROMPT[0], PROMPT[0][:3]]
    _, got = generate_reading(m, [HeadAblation(layer=0, heads=None, mode="mean")], prompts, steps=2)
    _, c = m.run_with_cache(prompts, names=["blocks.0.attn.hook_z"])
    z = c["blocks.0.attn.hook_z"]
    prompt_mean = torch.cat([z[0], z[1, :3]]).mean(0)  # real tokens only, not the padding
    for i, p in enumerate(prompts):
        _, want = generate_reading(m, [HeadAblation(layer=0, heads=None, mode="mean", mean_value=prompt_mean)],
                                   [p], steps=2)
        torch.testing.assert_close(got[i], want[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind, fix", [("HeadAblation", "mean_value="), ("HeadMask", "baseline=")])
def test_decode_step_without_a_prompt_pass_is_refused(m, kind, fix):
    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        past = m.model(input_ids=ids, use_cache=True).past_key_values  # a cache filled outside the hooks context
        with m.hooks(interventions=[mean_ablations(m)[kind]()]):
            with pytest.raises(ValueError, match=f"no prompt pass.*{fix}"):
                m.model(input_ids=torch.tensor([[11]]), past_key_values=past, use_cache=True)
