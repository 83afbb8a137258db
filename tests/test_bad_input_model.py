"""Bad input to the model itself (HookedModel, Tokens, interp.load, hooks): a clear ValueError/TypeError that names
the argument, what it was and what is allowed; never a deep torch/transformers traceback or a silent wrong answer.

Most rows run on toy-induction (2 layers, 4 heads, vocabulary 64, n_ctx 128, BOS id 0 in its config); BOS handling
of a real tokenizer uses smollm2-135m (BOS id 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import interp
from interp import analyses as A
from interp.tokens import Tokens


@pytest.fixture(scope="module")
def toy():
    return interp.load("toy-induction")


def ids(b=2, n=20, seed=0):
    return torch.randint(1, 64, (b, n), generator=torch.Generator().manual_seed(seed))


def mask_from(rows):
    return torch.tensor(rows, dtype=torch.bool)


# ------------------------------------------------------------------------------------------------ 1: token-id forms
NESTED = [
    ("nested-float", [[1.9, 2.9]], TypeError, r"token ids must be ints: inputs\[0\]\[0\] is float 1\.9"),
    ("float-tensor-in-list", [torch.tensor([1.5, 2.5])], TypeError,
     r"inputs\[0\] must be an integer tensor of token ids, got torch\.float32"),
    ("nested-bool", [[True, False]], TypeError, r"inputs\[0\]\[0\] is bool True"),
    ("flat-bool", [True, False], TypeError, r"inputs\[0\] is bool True"),
    ("nested-str", [["a", "b"]], TypeError, r"inputs\[0\]\[0\] is str 'a'"),
    ("nested-3-deep", [[[1, 2]]], TypeError, r"inputs\[0\]\[0\] is list \[1, 2\]"),
    ("nested-none", [[1, None]], TypeError, r"inputs\[0\]\[1\] is NoneType None"),
    ("0-d-tensors", [torch.tensor(1)], ValueError, r"inputs\[0\] must be a 1-D tensor of token ids .*shape \(\)"),
    ("2-d-tensor-in-list", [torch.ones(2, 2, dtype=torch.long)], ValueError, r"inputs\[0\] must be a 1-D tensor"),
    ("flat-mixed-float", [1, 2.5], TypeError, r"inputs\[1\] is float 2\.5"),
    ("mixed-str-int", ["a", 1], TypeError, "inputs mixes int, str"),
    ("empty-batch-tensor", torch.zeros(0, 5, dtype=torch.long), ValueError, r"no prompt \(shape \(0, 5\)\)"),
]


@pytest.mark.parametrize("case", NESTED, ids=[c[0] for c in NESTED])
def test_token_id_forms_are_checked(toy, case):
    _, inputs, exc, match = case
    with pytest.raises(exc, match=match):
        toy(inputs)


def test_numpy_integer_ids_are_token_ids(toy):
    torch.testing.assert_close(toy([np.int64(3), np.int64(4)]), toy([3, 4]))
    torch.testing.assert_close(toy([[np.int32(3), 4]]), toy([[3, 4]]))


# ------------------------------------------------------------------------------------------------ 2: prepend_bos
def test_prepend_bos_must_be_bool_or_none(toy):
    with pytest.raises(TypeError, match="prepend_bos must be True, False or None .*got str 'yes'"):
        toy(ids(), prepend_bos="yes")
    with pytest.raises(TypeError, match="prepend_bos must be"):
        toy.run_with_cache(ids(), stats=["entropy"], prepend_bos=1)


def test_prepend_bos_on_token_ids_toy(toy):  # the toy's BOS id (0) comes from its config
    assert toy.to_tokens([5, 6], prepend_bos=True).input_ids.tolist() == [[0, 5, 6]]
    assert toy.to_tokens([0, 5, 6], prepend_bos=True).input_ids.tolist() == [[0, 5, 6]]  # already there
    assert toy.to_tokens([5, 6], prepend_bos=False).input_ids.tolist() == [[5, 6]]
    assert toy.to_tokens(torch.tensor([[5, 6]]), prepend_bos=True).input_ids.tolist() == [[0, 5, 6]]


def test_tensor_ids_fast_path_matches_lists(toy):
    """A [batch, pos] integer tensor skips the host lists (one min/max read): same Tokens as the list path, any
    integer dtype in, int64 out, and out-of-vocabulary ids named with the prompt they sit in."""
    rows = [[5, 6, 7], [1, 2, 3]]
    want = toy.to_tokens(rows)
    for dtype in (torch.int64, torch.int32, torch.uint8):
        got = toy.to_tokens(torch.tensor(rows, dtype=dtype))
        assert got.input_ids.dtype == torch.int64 and got.input_ids.equal(want.input_ids)
        assert got.attention_mask is None and got.lengths == want.lengths == [3, 3]
    src = torch.tensor(rows)
    got = toy.to_tokens(src)
    src[0, 0] = 9  # the tokens are a copy: editing the caller's tensor later changes nothing
    assert got.input_ids.equal(want.input_ids)
    got = toy.to_tokens(torch.tensor(rows).T.contiguous().T)  # a transposed view in: contiguous ids out
    assert got.input_ids.is_contiguous() and got.input_ids.equal(want.input_ids)
    for dtype in (torch.uint16, torch.uint32):  # no aminmax on these: the list path, same result
        assert toy.to_tokens(torch.tensor(rows, dtype=dtype)).input_ids.equal(want.input_ids)
    v = toy.cfg.d_vocab
    with pytest.raises(ValueError, match=rf"prompt 1 has token ids outside the vocabulary \[0, {v}\): \[{v}, -1\]"):
        toy.to_tokens(torch.tensor([[5, 6, 7, 8], [1, v, -1, 2]]))
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        toy.to_tokens(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="maximum context"):
        toy.to_tokens(torch.zeros(1, toy.cfg.n_ctx + 1, dtype=torch.long))


def test_prepend_bos_on_token_ids_smollm2(smollm2):
    bos = smollm2.tokenizer.bos_token_id
    assert bos is not None
    assert smollm2.to_tokens([42, 43], prepend_bos=True).input_ids.tolist() == [[bos, 42, 43]]
    assert smollm2.to_tokens([bos, 42, 43], prepend_bos=True).input_ids.tolist() == [[bos, 42, 43]]
    assert smollm2.to_tokens([42, 43]).input_ids.tolist() == [[42, 43]]  # None: ids as given
    toks = smollm2.to_tokens([[42, 43], [bos, 5]], prepend_bos=True)
    assert toks.lengths == [3, 2] and toks.input_ids[:, 0].tolist() == [bos, bos]
    text = smollm2.to_tokens("hi", prepend_bos=True).input_ids
    assert text[0, 0] == bos and smollm2.to_tokens(text[0, 1:].tolist(), prepend_bos=True).input_ids.equal(text)
    with pytest.raises(ValueError, match="prompts do not all start with BOS"):
        smollm2.to_tokens(smollm2.to_tokens([[42, 43], [bos, 5]]), prepend_bos=True)


# ------------------------------------------------------------------------------------------------ 3, 4: Tokens
def _tokens_cases():
    x = torch.tensor([[1, 2, 3]])
    return [
        ("all-padding-row", Tokens(ids(), torch.zeros(2, 20, dtype=torch.bool), [0, 0]), ValueError,
         r"Tokens row 0 has no real token \(its attention_mask row is all False\)"),
        ("hole", Tokens(x, mask_from([[True, False, True]]), [2]), ValueError,
         "Tokens row 0 has an attention_mask with holes"),
        ("middle-run", Tokens(torch.tensor([[1, 2, 3, 4]]), mask_from([[False, True, True, False]]), [2]), ValueError,
         "Tokens row 0 has an attention_mask with holes"),
        ("lengths-vs-mask", Tokens(x, mask_from([[True, True, False]]), [3]), ValueError,
         r"Tokens.lengths \[3\] disagree with the attention mask, which has \[2\]"),
        ("lengths-no-mask", Tokens(x, None, [7]), ValueError, r"Tokens.lengths \[7\] disagree"),
        ("lengths-count", Tokens(x, None, [3, 3]), ValueError, r"Tokens.lengths \[3, 3\] disagree"),
        ("lengths-not-ints", Tokens(x, None, [3.0]), TypeError, "Tokens.lengths must be a list of ints"),
        ("float-mask", Tokens(x, torch.tensor([[1.0, 0.5, 0.0]]), [2]), TypeError,
         "Tokens.attention_mask must be a bool .*float32"),
        ("int-mask-2", Tokens(x, torch.tensor([[1, 2, 0]]), [2]), ValueError, "must hold only 0 and 1"),
        ("empty-positions", Tokens(torch.zeros(1, 0, dtype=torch.long), None, [0]), ValueError,
         r"Tokens.input_ids is empty \(shape \(1, 0\)\)"),
        ("empty-batch", Tokens(torch.zeros(0, 3, dtype=torch.long), None, []), ValueError,
         r"Tokens.input_ids is empty \(shape \(0, 3\)\)"),
    ]


@pytest.mark.parametrize("case", _tokens_cases(), ids=[c[0] for c in _tokens_cases()])
def test_tokens_are_checked_where_the_model_takes_them(toy, case):
    _, toks, exc, match = case
    with pytest.raises(exc, match=match):
        toy(toks)
    with pytest.raises(exc, match=match):
        toy.run_with_cache(toks, stats=["key_mean"])


def test_padded_tokens_that_are_fine_still_run(toy):
    x = ids(2, 6)
    right = Tokens(x, mask_from([[True] * 6, [True] * 4 + [False] * 2]), [6, 4])
    left = Tokens(x, mask_from([[True] * 6, [False] * 2 + [True] * 4]), torch.tensor([6, 4]))
    as_int = Tokens(x, right.attention_mask.long(), [6, 4])
    torch.testing.assert_close(toy(as_int), toy(right))
    torch.testing.assert_close(toy(left)[1, 2:], toy(x[1:, 2:])[0], atol=1e-5, rtol=1e-5)


def test_all_padding_row_gives_no_nan_statistics(toy):
    x = ids()
    with pytest.raises(ValueError, match="no real token"):
        toy.run_with_cache(Tokens(x, torch.zeros_like(x, dtype=torch.bool), [0, 0]), stats=["key_mean"])


# ------------------------------------------------------------------------------------------------ 6: first_token_alpha
def test_first_token_alpha_with_padding(toy):
    x = ids()
    with pytest.raises(ValueError, match="no real token"):
        A.first_token_alpha(toy, Tokens(x, torch.zeros_like(x, dtype=torch.bool), [0, 0]))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, :5] = False  # left-padded row: its first token sits at position 5
    got = A.first_token_alpha(toy, Tokens(x, mask, [20, 15]))
    want = (A.first_token_alpha(toy, x[:1]) + A.first_token_alpha(toy, x[1:, 5:])) / 2
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ 5: generate
GENERATE = [
    ("past-n_ctx", torch.ones(1, 120, dtype=torch.long), 50, ValueError,
     r"the prompt has 120 tokens and max_new_tokens=50: the model would read 169 positions, beyond its maximum "
     r"context \(n_ctx\) 128; .*at most 9 new tokens"),
    ("fills-n_ctx", torch.ones(1, 128, dtype=torch.long), 2, ValueError, "at most 1 new tokens"),
    ("float", ids(1, 5), 2.5, TypeError, "max_new_tokens must be an int >= 1, got float 2.5"),
    ("bool", ids(1, 5), True, TypeError, "max_new_tokens must be an int >= 1, got bool True"),
    ("zero", ids(1, 5), 0, ValueError, "max_new_tokens must be an int >= 1, got 0"),
    ("negative", ids(1, 5), -1, ValueError, "max_new_tokens must be an int >= 1, got -1"),
]


@pytest.mark.parametrize("case", GENERATE, ids=[c[0] for c in GENERATE])
def test_generate_checks_max_new_tokens(toy, case):
    _, prompt, k, exc, match = case
    with pytest.raises(exc, match=match):
        toy.generate(prompt, max_new_tokens=k)


def test_generate_up_to_n_ctx(toy):
    """The last new token is predicted from n_ctx positions, never fed back: a full prompt still gets one."""
    assert toy.generate(torch.ones(1, 120, dtype=torch.long), max_new_tokens=9).shape == (1, 9)
    assert toy.generate(torch.ones(1, 128, dtype=torch.long), max_new_tokens=1).shape == (1, 1)
    assert toy.generate(ids(1, 5), max_new_tokens=np.int64(2)).shape == (1, 2)


# ------------------------------------------------------------------------------------------------ 7: load flags
class _FakeTokenizer:
    bos_token_id = 0
    pad_token_id = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [1 + ord(c) % 60 for c in text]}

    def decode(self, ids):
        return "".join(chr(64 + int(i)) for i in ids)


LOAD = [
    ("tokenizer-int", dict(tokenizer=5), TypeError, "load: tokenizer must be None or a tokenizer object .*got int 5"),
    ("tokenizer-name", dict(tokenizer="gpt2"), TypeError, "load: tokenizer must be a tokenizer object or None, got "
     "the str 'gpt2'; interp does not load tokenizers by name"),
    ("tokenizer-no-decode", dict(tokenizer=lambda s: {"input_ids": [1]}), TypeError, "with .decode"),
    ("check_weights-str", dict(check_weights="no"), TypeError, "load: check_weights must be True or False, got str"),
    ("cache-int", dict(cache=0), TypeError, "load: cache must be True or False, got int 0"),
]


@pytest.mark.parametrize("case", LOAD, ids=[c[0] for c in LOAD])
def test_load_options_are_checked(case):
    _, kw, exc, match = case
    with pytest.raises(exc, match=match):
        interp.load("toy-induction", **kw)


def test_load_with_a_tokenizer_object(toy):
    m = interp.load("toy-induction", tokenizer=_FakeTokenizer())
    torch.testing.assert_close(m("ab"), m([1 + ord("a") % 60, 1 + ord("b") % 60]))
    with pytest.raises(TypeError, match="HookedModel: tokenizer must be None or a tokenizer object"):
        interp.HookedModel(toy.model, tokenizer=5)
    with pytest.raises(ValueError, match="not applied to an already-wrapped HookedModel"):
        interp.load(toy, tokenizer=_FakeTokenizer())


def test_to_transformer_lens_copy_must_be_bool(toy):
    with pytest.raises(TypeError, match="copy must be True or False, got str 'no'"):
        toy.to_transformer_lens(copy="no")


# ------------------------------------------------------------------------------------------------ 8: hook returns
HOOK_RETURNS = [
    ("long", "blocks.0.attn.hook_z", lambda t, h: t.long(), r"returned a torch\.int64 tensor on cpu; .*torch\.float32"),
    ("double", "blocks.0.hook_resid_post", lambda t, h: t.double(), r"returned a torch\.float64 tensor"),
    ("meta", "blocks.0.hook_resid_post", lambda t, h: torch.empty_like(t, device="meta"),
     r"returned a torch\.float32 tensor on meta; .*torch\.float32 on cpu"),
    ("half-q", "blocks.1.attn.hook_q", lambda t, h: t.half(), r"returned a torch\.float16 tensor"),
]


@pytest.mark.parametrize("case", HOOK_RETURNS, ids=[c[0] for c in HOOK_RETURNS])
def test_hook_return_dtype_and_device(toy, case):
    _, name, fn, match = case
    with pytest.raises(ValueError, match=f"hook '{name}' " + match):
        toy.run_with_hooks(ids(), fwd_hooks=[(name, fn)])


def test_backward_hook_return_dtype(toy):
    logits = toy.run_with_hooks(ids(), bwd_hooks=[("blocks.0.hook_resid_post", lambda g, h: g.double())])
    with pytest.raises(ValueError, match=r"backward hook at 'blocks.0.hook_resid_post' returned a torch\.float64"):
        logits.sum().backward()


# ------------------------------------------------------------------------------------------------ 9: keywords, layers
def test_run_with_hooks_unknown_keyword(toy):
    with pytest.raises(TypeError, match=r"run_with_hooks got an unexpected keyword argument 'stat' \(did you mean "
                                        r"'stats'\?\); it takes .*sink_tokens"):
        toy.run_with_hooks(ids(), stat=["entropy"])


def test_names_filter_must_be_callable(toy):
    with pytest.raises(TypeError, match="names_filter must be a function of the hook name .*got str 'x'"):
        toy.run_with_cache(ids(), names_filter="x")


LAYERS = [
    ("str", "0", TypeError, "layers must be an int in 0..1, a list of them, or None .*got str '0'"),
    ("float", 0.0, TypeError, "layers must be an int .*got float 0.0"),
    ("float-in-list", [0.0], TypeError, "layer float 0.0 is not an int"),
    ("str-in-list", ["0"], TypeError, "layer str '0' is not an int"),
    ("out-of-range", [np.int64(2)], ValueError, r"layer 2 out of range; the model has layers 0\.\.1"),
]


@pytest.mark.parametrize("case", LAYERS, ids=[c[0] for c in LAYERS])
def test_layers_are_checked(toy, case):
    _, layers, exc, match = case
    with pytest.raises(exc, match=match):
        toy.run_with_cache(ids(), stats=["entropy"], layers=layers)
    with pytest.raises(exc, match=match):
        toy.run_with_hooks(ids(), stats=["entropy"], layers=layers)


def test_numpy_layers_are_layers(toy):
    _, a = toy.run_with_cache(ids(), stats=["entropy"], layers=[np.int64(1)])
    _, b = toy.run_with_cache(ids(), stats=["entropy"], layers=1)
    assert list(a.keys()) == list(b.keys()) == ["blocks.1.attn.hook_query_entropy"]


# ------------------------------------------------------------------------------------------------ 10: selections
EMPTY = [
    ("names", dict(names=[]), "names=\\[\\] selects no hook point"),
    ("names_filter", dict(names_filter=lambda n: False), "names_filter matches no hook point"),
    ("stats", dict(stats=[]), "stats selects no statistic"),
    ("stats-none", dict(stats="none"), "stats selects no statistic"),
    ("layers", dict(stats=["entropy"], layers=[]), "layers=\\[\\] selects no layer"),
]


@pytest.mark.parametrize("case", EMPTY, ids=[c[0] for c in EMPTY])
def test_explicit_empty_selection_is_refused(toy, case):
    _, kw, match = case
    with pytest.raises(ValueError, match="run_with_cache: " + match):
        toy.run_with_cache(ids(), **kw)


def test_span_mass_needs_a_span(toy):
    for stats in (["span_mass"], "span_mass", ["entropy", "span_mass"]):
        with pytest.raises(ValueError, match=r"stats asks for span_mass but no span=\(start, end\) was given"):
            toy.run_with_cache(ids(), stats=stats)
    _, cache = toy.run_with_cache(ids(), stats=["span_mass"], span=(2, 5))
    assert set(cache.keys()) == {f"blocks.{l}.attn.hook_query_span_mass" for l in range(2)}


def test_nothing_chosen_still_means_every_statistic(toy):
    _, cache = toy.run_with_cache(ids())
    assert len(cache.keys()) == 18  # 9 statistics (span_mass needs a span) x 2 layers
    _, grouped = toy.run_with_cache(ids(), stats="all")  # a group without a span drops span_mass, as before
    assert set(grouped.keys()) == set(cache.keys())
    toy.run_with_hooks(ids(), stats="all")  # the same in hooks(): no span_mass error for a group


@pytest.mark.parametrize("call,kw", [("run_with_cache", {"pattern": "yes"}), ("run_with_cache", {"to_cpu": "no"}),
                                     ("run_with_hooks", {"grad": "no"}), ("run_with_hooks", {"grad": 1})])
def test_flags_must_be_bools(toy, call, kw):
    name = next(iter(kw))
    with pytest.raises(TypeError, match=f"{call}: {name} must be True or False"):
        getattr(toy, call)(ids(), **kw)


def test_position_read_sink_analyses_refuse_left_padding(toy):
    from analyses import sinks
    from interp.tokens import Tokens

    x = ids()
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, :3] = False
    left = Tokens(x, mask, mask.sum(-1).tolist())
    for call in (lambda: sinks.hidden_sinks(toy, left), lambda: sinks.value_drains(toy, left),
                 lambda: sinks.massive_activations(toy, left), lambda: sinks.dormant_heads(toy, {"a": left})):
        with pytest.raises(ValueError, match="left-padded"):
            call()
    right = Tokens(x, mask.flip(-1), mask.sum(-1).tolist())
    assert len(sinks.value_drains(toy, right)) == toy.cfg.n_layers
