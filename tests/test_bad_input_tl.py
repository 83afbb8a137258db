"""TransformerLens wrapping (interp.tl) on bad input: padded text batches are masked (not read as real tokens),
TransformerLens' own keywords are checked and applied, and wrong objects get interp's own message."""

import pytest
import torch

import interp
from helpers import tiny_llama
from interp.tl import to_transformer_lens


def _word_tokenizer(folder=None):
    """A WordLevel tokenizer of the words w0..w99 (w0 BOS, w3 pad): saved to `folder` and loaded back, else only
    in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({f"w{i}": i for i in range(100)}, unk_token="w1"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="w0", eos_token="w2", pad_token="w3", unk_token="w1")
    if folder is None:
        return tok
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    hm = interp.HookedModel(tiny_llama(vocab=100, n_ctx=32), _word_tokenizer(tmp_path_factory.mktemp("tok")),
                            name="tiny")
    return hm, interp.TLPatternModel(to_transformer_lens(hm))


def _assert_same_at_real_positions(padded, alone, row, keys):
    """`padded` (a batch) row `row` holds `alone`'s statistics (a one-prompt run) at its real positions, which
    padded.tokens' mask names; key statistics at padding keys are those of keys no query sees. Key positions are
    the padded row's (as HookedModel's): left padding shifts argmax, and sink_mass (of the row's first keys) is not
    compared there."""
    real = padded.tokens.attention_mask[row]  # [pos] bool
    shift = int(real.long().argmax())  # left padding: the first real position
    for k in keys:
        if shift and k.endswith("sink_mass"):
            continue
        got, want = padded[k][row][..., real], alone[k][0]  # [head, real positions]
        if k.endswith("argmax"):
            got = got - shift
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, equal_nan=True, msg=k)
        if "key_" in k:
            pad = padded[k][row][..., ~real]
            assert (pad.isnan() if k.endswith("key_mean") else pad == 0).all(), k


@pytest.mark.parametrize("side", ["right", "left"])
def test_texts_of_unequal_lengths_are_masked_as_one_at_a_time(pair, side):
    """V13: the pads of the short text were read as real tokens (key_mass [2.09, 1.07, 0.59, 0.25] for 'w5')."""
    _, m = pair
    _, a = m.run_with_cache(["w5 w6 w7", "w5"], padding_side=side, sink_tokens=1, local_window=2)
    ids = a.tokens.input_ids  # [2, 4]: BOS + 3 words, BOS + 1 word + 2 pads
    assert a.tokens.lengths == [4, 2]
    want_mask = [[True] * 4, [True, True, False, False] if side == "right" else [False, False, True, True]]
    assert a.tokens.attention_mask.tolist() == want_mask and ids.shape == (2, 4)
    _, alone = m.run_with_cache("w5", sink_tokens=1, local_window=2)
    _assert_same_at_real_positions(a, alone, 1, list(alone.keys()))
    torch.testing.assert_close(a["blocks.0.attn.hook_key_mass"][1, 0][a.tokens.attention_mask[1]],
                               alone["blocks.0.attn.hook_key_mass"][0, 0])
    _, full = m.run_with_cache("w5 w6 w7", sink_tokens=1, local_window=2)
    _assert_same_at_real_positions(a, full, 0, list(full.keys()))


def test_key_statistics_of_padded_batches_match_hooked_models(pair):
    """The same padded batch (left-padded: queries that see no real key too) through interp's own wrapper."""
    hm, m = pair
    logits, a = m.run_with_cache(["w5 w6 w7 w8", "w5 w3", "w9"], padding_side="left", sink_tokens=1, local_window=2)
    assert a.tokens.lengths == [5, 3, 2] and a.tokens.attention_mask[:, 0].tolist() == [True, False, False]
    hm_logits, b = hm.run_with_cache(a.tokens, sink_tokens=1, local_window=2)
    real = a.tokens.attention_mask
    torch.testing.assert_close(logits[real], hm_logits[real], atol=1e-5, rtol=1e-5)
    for k in a.keys():  # left padding: every position, pad queries included, as HookedModel's
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5, equal_nan=True, msg=k)


def test_prepend_bos_and_padding_side_reach_the_tokenizer(pair):
    """V14: prepend_bos=False was dropped (ids [[0, 5, 6]]); V16: padding_side='middle' was accepted."""
    _, m = pair
    assert m.run_with_cache("w5 w6", prepend_bos=False)[1].tokens.input_ids.tolist() == [[5, 6]]
    assert m.run_with_cache("w5 w6", prepend_bos=True)[1].tokens.input_ids.tolist() == [[0, 5, 6]]
    assert m.to_tokens("w5 w6", prepend_bos=False).tolist() == [[5, 6]]
    assert m.to_tokens(["w5 w6", "w7"], padding_side="left").tolist() == [[0, 5, 6], [3, 0, 7]]
    with pytest.raises(ValueError, match=r"padding_side must be 'right', 'left' or None .*got str 'middle'"):
        m.run_with_cache(["w5 w6", "w7"], padding_side="middle")
    with pytest.raises(ValueError, match=r"to_tokens: padding_side must be 'right', 'left' or None"):
        m.to_tokens("w5", padding_side="middle")
    with pytest.raises(TypeError, match=r"prepend_bos must be True, False or None .*got str 'no'"):
        m.run_with_cache("w5", prepend_bos="no")
    with pytest.raises(ValueError, match=r"prepend_bos=True applies to text .*token ids are run as they are"):
        m.run_with_cache(torch.tensor([[5, 6]]), prepend_bos=True)
    with pytest.raises(ValueError, match=r"padding_side='left' applies to text"):
        m.run_with_cache(torch.tensor([[5, 6]]), padding_side="left")


def test_attention_mask_of_token_ids_is_checked_and_masks_the_statistics(pair):
    """V15: a [3, 3] mask on [2, 6] ids was accepted (logits changed) and the statistics never saw a mask."""
    _, m = pair
    ids = torch.tensor([[0, 5, 6, 7], [0, 5, 3, 3]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    _, a = m.run_with_cache(ids, attention_mask=mask)
    _, t = m.run_with_cache(["w5 w6 w7", "w5"])
    assert a.tokens.attention_mask.tolist() == mask.bool().tolist() and a.tokens.lengths == [4, 2]
    for k in a.keys():
        torch.testing.assert_close(a[k], t[k], equal_nan=True, msg=k)
    _, ones = m.run_with_cache(ids, attention_mask=torch.ones(2, 4, dtype=torch.bool))
    assert ones.tokens.attention_mask is None  # nothing padded
    where = "TLPatternModel.run_with_cache: "
    bad = [
        (torch.ones(3, 3), TypeError, "not an additive float mask"),
        (torch.ones(3, 3, dtype=torch.long), ValueError, r"shape of the token ids \[batch, pos\] = \[2, 4\], got "
                                                         r"shape \(3, 3\)"),
        ([[1, 1, 1, 1], [1, 1, 0, 0]], TypeError, "must be None or a bool"),
        (torch.tensor([[1, 1, 1, 2], [1, 1, 0, 0]]), ValueError, r"only 0 and 1 .*got values \[0, 1, 2\]"),
        (torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]), ValueError, "row 1 has no real token"),
        (torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0]]), ValueError, "row 1 has an attention_mask with holes"),
    ]
    for value, err, match in bad:
        with pytest.raises(err, match=f"^{where}.*{match}"):
            m.run_with_cache(ids, attention_mask=value)
    with pytest.raises(ValueError, match="attention_mask= goes with token ids; texts are padded and masked here"):
        m.run_with_cache(["w5 w6 w7", "w5"], attention_mask=mask)
    with pytest.raises(ValueError, match=r"run_with_cache: text 1 is empty \(no tokens\)"):
        m.run_with_cache(["w5", ""], prepend_bos=False)


def test_pattern_model_refuses_interp_models(pair):
    """V17: a HookedModel (or a TLPatternModel) was taken, then failed with 'stat lse needs ... hook_attn_scores'."""
    hm, m = pair
    with pytest.raises(TypeError, match=r"needs a TransformerLens model .*got an interp HookedModel.*use it as it is, "
                                        r"or wrap model.to_transformer_lens\(\)"):
        interp.TLPatternModel(hm)
    with pytest.raises(TypeError, match=r"got an interp TLPatternModel, which gives statistics itself"):
        interp.TLPatternModel(m)


def test_to_tokens_takes_text_only(pair):
    """V18: m.to_tokens(5) failed inside transformers."""
    _, m = pair
    for value in (5, [], torch.tensor([5, 6]), ["w5", 6]):
        with pytest.raises(TypeError, match=r"^TLPatternModel.to_tokens: inputs must be a text or a non-empty list of "
                                            r"texts .*got "):
            m.to_tokens(value)


def test_bridge_of_an_unsaved_tokenizer_is_refused():
    """V19: a tokenizer built in memory gave KeyError 'name_or_path' from inside transformer_lens."""
    hm = interp.HookedModel(tiny_llama(vocab=100, n_ctx=32), _word_tokenizer(), name="tiny")
    with pytest.raises(ValueError, match=r"tiny's tokenizer was built in memory .*reloads the tokenizer from its "
                                         r"name_or_path; save it"):
        to_transformer_lens(hm)
