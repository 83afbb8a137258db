"""Problems a first-time user met, each fixed with a clear message or a documented behaviour: kernel inputs in the
hook layout, transposed head tables, AttentionStats by name, cache.stack's KeyError, text_tokens past its text,
negative layer indices."""

import pytest
import torch

from interp.kernels import attention_with_stats

HOOK_LAYOUT = (r"\[batch, heads, seq, head_dim\].*hook_q / hook_k / hook_v are \[batch, pos, head, d_head\]"
               r".*transpose\(1, 2\)")


@pytest.mark.parametrize("q_shape, k_shape, what", [
    ((1, 8, 9, 16), (1, 8, 3, 16), r"q_len \(9, q's dim 2\) > k_len \(3"),  # hook_q / hook_k of a GQA model
    ((1, 6, 4, 16), (1, 5, 4, 16), r"kv_heads \(5, k's dim 1\) must divide heads \(6"),
])
def test_kernel_shape_errors_name_the_layout(q_shape, k_shape, what):
    q, k = torch.randn(q_shape), torch.randn(k_shape)
    with pytest.raises(ValueError, match=what + ".*" + HOOK_LAYOUT):
        attention_with_stats(q, k, k.clone(), backend="reference")
    with pytest.raises(ValueError, match="k and v must agree.*" + HOOK_LAYOUT):
        attention_with_stats(q, k, k.transpose(1, 2), backend="reference")


def test_head_table_checks_the_shape_against_the_model():
    from interp import HookedModel
    from interp.analyses import head_table
    from helpers import tiny_llama

    with pytest.raises(ValueError, match=r"\[9, 30\], but 'smollm2-135m' has 30 layers x 9 heads.*\[30, 9\].*\.T"):
        head_table({"sink_score": torch.rand(9, 30)}, "smollm2-135m")  # [head, layer]
    assert len(head_table({"sink_score": torch.rand(30, 9)}, "smollm2-135m")) == 270
    with pytest.raises(ValueError, match=r"'toy-induction' has 2 layers x 4 heads"):
        head_table({"sink_score": torch.rand(2, 5)}, "toy-induction")
    m = HookedModel(tiny_llama(n_layers=2, n_heads=4), name="tiny")  # a loaded model: its own shape and name
    with pytest.raises(ValueError, match=r"'tiny' has 2 layers x 4 heads"):
        head_table({"sink_score": torch.rand(4, 2)}, m)
    t = head_table({"sink_score": torch.rand(2, 4)}, m)
    assert set(t["model"]) == {"tiny"} and len(t) == 8
    assert len(head_table({"sink_score": torch.rand(4, 2)}, "some-other-model")) == 8  # unknown names: unchecked


def test_importance_progress_lines_use_the_method_names(tmp_path):
    from interp.batch import importance as BI

    said = []
    t = BI.importance(["toy-induction"], tmp_path, methods=["ablation_zero", "ablation_mean"], pruning=False,
                      task="induction", n=4, progress=True, log=said.append)
    assert set(t.method) == {"ablation_zero", "ablation_mean"}
    shards = {s.split(":")[0] for s in said if s.startswith("toy-induction ")}
    assert shards == {"toy-induction ablation_zero", "toy-induction ablation_mean"}, said
    assert sorted(p.name for p in (tmp_path / "shards" / "toy-induction").glob("*.json")) == [
        "ablation_mean.json", "ablation_zero.json"]


def test_attention_stats_by_name():
    q = torch.randn(1, 2, 8, 16)
    _, st = attention_with_stats(q, q, q, stats=["entropy", "max_prob"], backend="reference")
    assert st["entropy"] is st.entropy and dict(st.items()) == {n: st[n] for n in st}
    assert set(st.keys()) == {"entropy", "max_prob"} and "entropy" in st and "lse" not in st
    with pytest.raises(KeyError, match=r"'key_mean' was not computed in this call \(computed: \['max_prob', "
                                       r"'entropy'\]\)"):
        st["key_mean"]
    with pytest.raises(KeyError, match=r"no statistic named 'entropi' \(did you mean 'entropy'\?\).*'key_count'"):
        st["entropi"]


def test_cache_stack_error_lists_what_was_captured():
    from interp import HookedModel
    from helpers import tiny_llama

    m = HookedModel(tiny_llama())
    _, cache = m.run_with_cache([[1, 2, 3]], stats=["entropy", "key_mean"])
    assert cache.stack("hook_query_entropy").shape[0] == 2
    with pytest.raises(KeyError, match=r"no layer captured 'entropy'; did you mean 'hook_query_entropy'\?.*"
                                       r"captured per layer: \[.*'hook_key_mean'"):
        cache.stack("entropy")
    with pytest.raises(KeyError, match=r"did you mean 'hook_query_entropy'"):
        cache.stack("query_entropy")
    with pytest.raises(KeyError, match=r"no layer captured 'hook_zz'.*captured per layer"):
        cache.stack("hook_zz")


def test_negative_layer_indices_are_refused_with_a_reason():
    from interp import HeadAblation, HookedModel
    from interp.head_mask import HeadMask
    from helpers import tiny_llama

    m = HookedModel(tiny_llama())
    why = r"layer -1 out of range; the model has layers 0\.\.1 \(negative indices do not count from the end here: " \
          r"the last layer is 1\)"
    with pytest.raises(ValueError, match=why):
        m.run_with_cache([[1, 2, 3]], stats=["entropy"], layers=[-1])
    with pytest.raises(ValueError, match="HeadAblation: " + why):
        m.run_with_hooks([[1, 2, 3]], interventions=[HeadAblation(layer=-1)])
    with pytest.raises(ValueError, match="HeadMask.only_layers: " + why):
        m.run_with_hooks([[1, 2, 3]], interventions=[HeadMask(torch.zeros(2, 4), only_layers=[-1])])
    with pytest.raises(ValueError, match=r"layer 2 out of range; the model has layers 0\.\.1$"):  # no note then
        m.run_with_cache([[1, 2, 3]], stats=["entropy"], layers=[2])


def test_text_tokens_refuses_more_than_the_context(smollm2):
    from interp import analyses as A

    with pytest.raises(ValueError, match=r"n_tokens=100000 exceeds smollm2-135m's context of 8192 tokens"):
        A.text_tokens(smollm2, "prose", n_tokens=100000)
    t = A.text_tokens(smollm2, "prose", n_tokens=1024)
    n = A.text_tokens(smollm2, "prose").shape[1]  # the bundled paragraph once (~470 tokens), then repeated
    assert t.shape == (1, 1024) and 400 < n < 550 and torch.equal(t[0, n:2 * n], t[0, :n])


def test_cache_repr_is_a_short_summary():
    import interp

    m = interp.load("toy-induction")
    x = torch.tensor([[1, 2, 3, 1, 2, 3]])
    _, cache = m.run_with_cache(x, names_filter=lambda n: True)
    text = repr(cache)
    assert str(cache) == text and "tensor(" not in text and len(text.splitlines()) < 30
    assert text.startswith(f"ActivationCache: {len(cache)} hook points, ")
    assert "blocks.{0-1}.attn.hook_z" in text and "2 x [1, 6, 4, 16] float32" in text
    assert "hook_embed" in text and "int64" in text  # hook_query_argmax
    _, _, grads = m.run_with_cache(x, names=["blocks.0.attn.hook_z", "hook_embed"], grad_of=lambda l: l[0, -1].sum())
    g = repr(grads)
    assert g.startswith("ActivationCache: 2 gradients, ") and "metric" in g and "tensor(" not in g
    assert "blocks.0.attn.hook_z  [1, 6, 4, 16] float32" in g


def test_generate_documents_that_it_returns_only_the_new_ids(smollm2):
    import pathlib

    from interp import HookedModel
    from helpers import tiny_llama

    doc = HookedModel.generate.__doc__
    assert "only the NEW token ids" in doc and "without the prompt" in doc and "model.to_string(out" in doc
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    shown = readme[readme.index('model.generate("The capital of France is"'):][:300]
    assert "only the NEW token ids" in shown and "model.to_string(new[0])" in shown
    # the recipes the docstring gives
    m = HookedModel(tiny_llama(vocab=smollm2.cfg.d_vocab), smollm2.tokenizer, name="tiny")
    prompt = "The capital of France is"
    out = m.generate(prompt, max_new_tokens=3)
    ids = m.to_tokens(prompt).input_ids
    assert out.shape == (1, 3)
    full = torch.cat([ids, out], dim=1)
    torch.testing.assert_close(m.generate(prompt, max_new_tokens=4)[:, :3], out)
    assert isinstance(m.to_string(out[0]), str) and m.to_string(out) == [m.to_string(out[0])]
    assert m.to_string(full[0]).startswith(prompt)


def test_head_lists_take_the_circuits_head_names():
    import interp
    from analyses import importance as I
    from analyses import tasks as T
    from analyses.importance import head_pairs

    assert head_pairs(["L1H3", (0, 2), "L0H0"], 2, 4, "f") == [(1, 3), (0, 2), (0, 0)]
    with pytest.raises(ValueError, match=r"head \(2, 0\) out of range"):
        head_pairs(["L2H0"], 2, 4, "f")
    with pytest.raises(TypeError, match=r"'L\{layer\}H\{head\}' names \(as the circuits API names heads\).*"
                                        r"got the entry 'L1KV0'"):
        head_pairs(["L1KV0"], 2, 4, "f")
    with pytest.raises(TypeError, match=r"got str 'L1H3' \(one head: \['L1H3'\]\)"):
        head_pairs("L1H3", 2, 4, "f")
    m = interp.load("toy-induction")
    task = T.get_task("induction")
    batch = task.make(m, n=4)
    got = I.attention_influence(m, batch, heads=["L0H3", "L1H2"], task=task)
    torch.testing.assert_close(got, I.attention_influence(m, batch, heads=[(0, 3), (1, 2)], task=task))
    assert bool((got > 0).all())


def test_task_metric_names_what_it_takes():
    import interp
    from analyses import tasks as T

    m = interp.load("toy-induction")
    task = T.get_task("induction")
    batch = task.make(m, n=2)
    logits = m(batch.clean)
    for fn in (task.metric, task.accuracy):
        with pytest.raises(TypeError, match=r"task 'induction' \w+ takes \(logits, batch\), the batch a TaskBatch "
                                            r"from get_task\('induction'\)\.make\(model, n=\.\.\.\); got str 'x'"):
            fn(logits, "x")
        with pytest.raises(TypeError, match=r"got Tokens as the batch \(its \.clean prompts alone"):
            fn(logits, batch.clean)
        with pytest.raises(TypeError, match=r"got Tensor as the batch \(the arguments are swapped"):
            fn(batch, logits)
    assert task.metric(logits, batch).dim() == 0


def test_nested_hooks_error_points_to_the_call_arguments():
    import interp

    m = interp.load("toy-induction")
    x = torch.tensor([[1, 2, 3, 1, 2, 3]])
    ablate = [interp.HeadAblation(layer=1, heads=[0])]
    with m.hooks(interventions=ablate):
        inside = m(x)
        for call, where in ((lambda: m.run_with_cache(x, names=["blocks.1.attn.hook_z"]), "run_with_cache"),
                            (lambda: m.run_with_hooks(x), "run_with_hooks"),
                            (lambda: m.hooks().__enter__(), r"model\.hooks\(\.\.\.\)")):
            with pytest.raises(RuntimeError, match=where + r": hooks are already active.*nested hook contexts are "
                                                           r"not supported.*model\.run_with_cache\(x, interventions="):
                call()
    logits, _ = m.run_with_cache(x, interventions=ablate, names=["blocks.1.attn.hook_z"])  # the way it points to
    torch.testing.assert_close(logits, inside)


def test_a_bridge_keeps_the_model_name(smollm2):
    pytest.importorskip("transformer_lens")
    import interp
    from analyses import head_table
    from helpers import tiny_llama

    hf = tiny_llama(vocab=smollm2.cfg.d_vocab)
    hf.config.name_or_path = "/root/.cache/interp/models/tiny-0123abcd"  # as a bundled model's cache folder
    m = interp.HookedModel(hf, smollm2.tokenizer, name="tiny")
    wrapped = interp.load(m.to_transformer_lens())
    assert wrapped.name == "tiny"
    assert set(head_table({"sink_score": torch.rand(2, 4)}, wrapped)["model"]) == {"tiny"}
