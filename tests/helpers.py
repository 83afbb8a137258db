import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _jitter_norms(hf, mean: float, std: float = 0.5):
    """Random norm weights ~ N(mean, std) (in place), so that the norms matter in tests; returns the model."""
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if "norm" in n:
                p.normal_(mean, std)
    return hf


def tiny_llama(n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, vocab=100, n_ctx=256, seed=0, **extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                      num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                      max_position_embeddings=n_ctx, **extra)
    return LlamaForCausalLM(cfg).eval()


def tiny_gemma3(seed=0):
    """A 2-layer random Gemma 3 (sandwich norms with non-trivial weights, one sliding-window layer, MQA)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                           sliding_window=4, layer_types=["sliding_attention", "full_attention"])
    # non-trivial norm weights, so the sandwich norms matter (Gemma's norms scale by 1 + weight)
    return _jitter_norms(Gemma3ForCausalLM(cfg).eval(), mean=0.0)



def tiny_gpt2(n_layers=2, n_heads=4, d_model=64, vocab=60, seed=0):
    """A random GPT-2 (Conv1D projections, learned positions) with non-zero biases."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=d_model, n_layer=n_layers,
                                    n_head=n_heads, bos_token_id=0, eos_token_id=0)).eval()
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    return hf


def tiny_olmoe(seed=0):
    """A 2-layer random OLMoE: pre-norms, a q/k norm over all heads (not per head), a mixture-of-experts MLP."""
    from transformers import OlmoeConfig, OlmoeForCausalLM

    torch.manual_seed(seed)
    cfg = OlmoeConfig(vocab_size=50, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, max_position_embeddings=64)
    return _jitter_norms(OlmoeForCausalLM(cfg).eval(), mean=1.0)


def tiny_olmo2(seed=0):
    """A 2-layer random OLMo 2: post-norms only (no norm in front of attention or MLP), q/k norms over all heads."""
    from transformers import Olmo2Config, Olmo2ForCausalLM

    torch.manual_seed(seed)
    cfg = Olmo2Config(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    return _jitter_norms(Olmo2ForCausalLM(cfg).eval(), mean=1.0)


def raises_clear_error(err, match, call, *args):
    """`call(*args)` raises exactly `err` (not a subclass from deep inside torch or pandas), with a one-line message
    matching `match`; returns the exception."""
    with pytest.raises(err, match=match) as info:
        call(*args)
    assert type(info.value) is err, type(info.value)
    assert "\n" not in str(info.value)
    return info.value


def fork_cli(cases: list, spec: Path, results: Path, env: dict, timeout: float) -> list:
    """Run command-line cases through tests/cli_fork.py (imports once, forks a child per case); their results
    ({returncode, stdout, stderr, seconds}), in order."""
    spec.write_text(json.dumps(cases))
    driver = Path(__file__).parent / "cli_fork.py"
    subprocess.run([sys.executable, str(driver), str(spec), str(results)], env=env, check=True, timeout=timeout)
    return json.loads(results.read_text())


def one_line_exit_2(r: dict) -> str:
    """The single stderr line of a refused command line, after checking it exited with 2 and printed no traceback."""
    lines = [line for line in r["stderr"].splitlines() if line.strip()]
    assert r["returncode"] == 2, (r["returncode"], r["stderr"][-3000:])
    assert len(lines) == 1 and "Traceback" not in r["stderr"], r["stderr"][-3000:]
    return lines[0]


def sm90_compile_json(code: str):
    """Run `code` (Python, from the repository root, `examples/` importable) without the Triton interpreter and with
    fp fusion on, as a GPU build compiles: it compiles kernels for sm_90 on this CPU and prints one JSON line; that
    line, parsed. (A subprocess: TRITON_INTERPRET is read when Triton is imported.)"""
    import os

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    res = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'examples'); " + code],
                         capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def tiny_gemma2(seed=0, softcap=2.0, final_softcap=30.0):
    """A 2-layer random Gemma 2: attention logit soft-capping (a small cap, so that it bends most scores), final
    logit soft-capping, sandwich norms, one sliding-window layer, GQA 4/2, a query_pre_attn_scalar (24) other than
    head_dim (16): the model's own scale, not 1 / sqrt(head_dim), is capped."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    cfg = Gemma2Config(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                       sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                       attn_logit_softcapping=softcap, final_logit_softcapping=final_softcap, query_pre_attn_scalar=24)
    hf = Gemma2ForCausalLM(cfg).eval()
    with torch.no_grad():  # larger q/k weights: scores of several units, where the cap matters
        for n, p in hf.named_parameters():
            if n.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(6.0)
    return _jitter_norms(hf, mean=0.0)


def random_qkv(b, h, hk, lq, lk, d, dtype, g: torch.Generator, spread: float):
    """q [b, h, lq, d] and k [b, hk, lk, d] scaled by `spread` (scores of several units), v [b, hk, lk, d], drawn in
    that order from g and cast to dtype."""
    q = (torch.randn(b, h, lq, d, generator=g) * spread).to(dtype)
    k = (torch.randn(b, hk, lk, d, generator=g) * spread).to(dtype)
    v = torch.randn(b, hk, lk, d, generator=g).to(dtype)
    return q, k, v


# the Triton kernels run on the GPU where there is one (not in the interpreter): kernel tests built on the CPU move
# their calls' tensors there with `on_device`
DEV = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


def to_device(x, device):
    """Tensors (and AttentionStats, tuples of them) moved to device, differentiably; anything else as it is."""
    from interp.kernels import AttentionStats

    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, AttentionStats):
        return AttentionStats(**{name: t.to(device) for name, t in x.items()})
    if isinstance(x, tuple):
        return tuple(to_device(y, device) for y in x)
    return x


def on_device(fn):
    """fn with its tensor arguments on DEV and its results back on the CPU (differentiably)."""
    def call(*args, **kw):
        return to_device(fn(*(to_device(a, DEV) for a in args), **{n: to_device(x, DEV) for n, x in kw.items()}),
                         "cpu")

    return call
