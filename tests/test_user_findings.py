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
