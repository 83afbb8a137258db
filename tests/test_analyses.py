"""Head analyses: pure score functions on hand-made patterns, ground truth on toy models, findings on SmolLM2."""

import json

import pandas as pd
import pytest
import torch

import interp
from interp import HeadAblation
from interp import analyses as A
from helpers import tiny_llama


def shifted_pattern(n, offset):
    """[1, 1, n, n]: every query i >= offset attends only to i - offset; earlier ones to key 0."""
    p = torch.zeros(1, 1, n, n)
    for i in range(n):
        p[0, 0, i, max(0, i - offset)] = 1.0
    return p


def test_pattern_scores_on_hand_made_patterns():
    n, period = 1 + 2 * 10, 10
    prev = shifted_pattern(n, 1)
    before = prev.clone()
    assert A.previous_token_score(prev).item() == pytest.approx(1.0)
    assert torch.equal(prev, before)  # never modified in place
    assert A.induction_score(prev, period).item() == pytest.approx(0.0)
    assert A.induction_score(shifted_pattern(n, period - 1), period).item() == pytest.approx(1.0)
    assert A.duplicate_token_score(shifted_pattern(n, period), period).item() == pytest.approx(1.0)
    uniform = torch.tril(torch.ones(n, n))
    uniform = (uniform / uniform.sum(-1, keepdim=True))[None, None]
    assert A.previous_token_score(uniform).item() < 0.3


def test_local_score_and_diffuseness():
    q = 200
    sink = torch.full((1, 2, q), 0.1)
    local = torch.tensor([0.85, 0.1])[None, :, None].expand(1, 2, q)
    s = A.local_score(sink, local, sink_tokens=4, local_window=64)
    assert s[0, 0].item() == pytest.approx(0.95) and s[0, 1].item() == pytest.approx(0.2)
    ent_uniform = torch.log(torch.arange(1, q + 1).float())[None, None]
    assert A.diffuseness(ent_uniform).item() == pytest.approx(1.0, abs=1e-5)
    assert A.diffuseness(torch.zeros(1, 1, q)).item() == 0.0


def test_sink_metric():
    a = torch.tensor([[0.9, 0.1], [0.5, float("nan")]])
    assert A.sink_metric(a, 0.3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        A.sink_metric(a, 1.5)


def test_head_table_and_labels():
    scores = {"induction_score": torch.tensor([[0.9, 0.0]]), "previous_token_score": torch.tensor([[0.1, 0.8]]),
              "sink_score": torch.tensor([[0.9, 0.9]])}
    t = A.head_table(scores, model_name="m")
    assert list(t.columns) == ["model", "layer", "head", "induction_score", "previous_token_score", "sink_score",
                               "label"]
    assert t["label"].tolist() == ["induction", "previous_token"]
    with pytest.raises(ValueError, match="one shape"):
        A.head_table({"a": torch.zeros(2, 2), "b": torch.zeros(3, 2)})


def test_probes_use_the_models_vocabulary():
    m = interp.load("toy-induction")
    toks = A.repeated_tokens(m, half=16, n_prompts=3)
    assert toks.shape == (3, 33) and int(toks.max()) < m.cfg.d_vocab and (toks[:, 0] == 0).all()
    assert torch.equal(toks[:, 1:17], toks[:, 17:])
    with pytest.raises(ValueError, match="exceed the model's context"):
        A.repeated_tokens(m, half=100)
    with pytest.raises(ValueError, match="no tokenizer"):
        A.text_tokens(m)


def test_toy_induction_heads_are_found_and_causal():
    from interp.toy.model import build_toy_model

    m = interp.load("toy-induction")
    s = A.head_pattern_scores(m, half=24, n_prompts=8)
    ind, prev = s["induction_score"], s["previous_token_score"]
    top_ind = divmod(int(ind.argmax()), m.cfg.n_heads)
    assert top_ind[0] == 1 and ind.max() > 0.5  # induction lives in the second layer
    assert prev[0].max() > 0.3  # and composes with a previous-token head in the first
    # controls that must score low: layer-0 heads cannot be induction heads (nothing earlier to compose with) ...
    assert ind[0].max() < 0.3, ind[0]
    # ... and the same architecture untrained shows neither structure
    spec = json.loads((interp.toy.registry.CKPT_DIR / "toy-induction.json").read_text())
    untrained = interp.load(build_toy_model(spec).eval())
    s0 = A.head_pattern_scores(untrained, half=24, n_prompts=8)
    assert s0["induction_score"].max() < 0.3 and s0["previous_token_score"].max() < 0.3, s0
    task = interp.toy.toy_task("toy-induction")
    toks, mask = task.sample(64, torch.Generator().manual_seed(9), half=24, prefix=5)

    def copy_acc(ivs, model=m):
        logits = model.run_with_hooks(toks, interventions=ivs)
        return (logits[:, :-1].argmax(-1) == toks[:, 1:])[mask[:, :-1]].float().mean().item()

    detected = [h for h in range(m.cfg.n_heads) if ind[1, h] > 0.3]
    assert copy_acc([]) > 0.95 and copy_acc([], untrained) < 0.2  # the untrained control cannot copy
    assert copy_acc([HeadAblation(1, detected)]) < 0.3  # ablating the detected induction heads breaks copying
    # ablating all layer-0 heads that are neither previous-token nor induction heads leaves copying mostly intact
    idle = [h for h in range(m.cfg.n_heads) if prev[0, h] < 0.3]
    assert idle and copy_acc([HeadAblation(0, idle)]) > 0.7  # measured 0.79 (3 heads at once)
    # the previous-token head it composes with is just as necessary; the least previous-token-like head is not
    prev_head, idle_head = int(prev[0].argmax()), int(prev[0].argmin())
    assert copy_acc([HeadAblation(0, [prev_head])]) < 0.3
    assert copy_acc([HeadAblation(0, [idle_head])]) > 0.9


def test_random_init_model_has_no_sinks():
    m = interp.HookedModel(tiny_llama(n_layers=2, n_heads=4, n_kv_heads=2, vocab=100))
    toks = torch.randint(1, 100, (2, 128), generator=torch.Generator().manual_seed(0))
    alpha = A.first_token_alpha(m, toks)
    assert A.sink_metric(alpha, 0.3) == 0.0


def test_smollm2_sinks(smollm2):
    """Published pattern (When Attention Sink Emerges): most heads of a trained LM sink on the first token; here
    the early layers do not and the later ones mostly do."""
    text = A.text_tokens(smollm2, "prose", n_tokens=256)
    alpha = A.first_token_alpha(smollm2, text)
    assert A.sink_metric(alpha, 0.3) > 0.3
    assert (alpha[:6] > 0.3).float().mean() < 0.1 and (alpha[20:] > 0.3).float().mean() > 0.6
    hs = A.hidden_sinks(smollm2, text)
    assert isinstance(hs, pd.DataFrame) and {"layer", "head", "position", "token", "alpha"} <= set(hs.columns)
    assert (hs["position"] > 0).all() and (hs["alpha"] > 0.1).all()


def test_bigram_backcopy_sink_active_and_dormant():
    """Guo et al.'s picture in the shipped 1-layer toy: the head copies the previous token on trigger queries
    (active, large output) and parks on BOS elsewhere (dormant, small output); the BOS value is drained. Per-query
    BOS mass comes from the kernel statistics and must match the full pattern."""
    m = interp.load("toy-bigram-backcopy")
    task = interp.toy.toy_task("toy-bigram-backcopy")
    toks, _ = task.sample(16, torch.Generator().manual_seed(5))
    trig = task.is_trigger(toks)
    other = ~trig
    other[:, :2] = False  # BOS itself and the first token (whose only other key is BOS)
    _, cache = m.run_with_cache(toks, names=["blocks.0.attn.hook_z"], pattern=True)
    p = cache["blocks.0.attn.hook_pattern"][:, 0]
    prev = torch.diagonal(p, offset=-1, dim1=1, dim2=2)  # query i -> key i-1
    assert prev[trig[:, 1:]].mean() > 0.9 and p[:, :, 0][trig].mean() < 0.05  # active: copies, ignores BOS
    assert p[:, :, 0][other].mean() > 0.8  # dormant: parked on BOS
    z = cache["blocks.0.attn.hook_z"][:, :, 0].norm(dim=-1)
    assert z[trig].mean() > 5 * z[other].mean()
    table = A.dormant_by_query(m, toks, {"trigger": trig, "other": other})
    t = table.set_index("domain")
    assert not t.loc["trigger", "dormant"] and t.loc["other", "dormant"]
    assert t.loc["other", "first_token_mass"] == pytest.approx(p[:, :, 0][other].mean().item(), abs=1e-4)
    assert t.loc["other", "rel_output_norm"] < 0.2
    assert A.value_drains(m, toks)[0, 0] < 0.2
    with pytest.raises(ValueError, match="bool tensor"):
        A.dormant_by_query(m, toks, {"trigger": trig.long()})
    with pytest.raises(ValueError, match="selects no query"):
        A.dormant_by_query(m, toks, {"none": torch.zeros_like(trig)})
    with pytest.raises(ValueError, match="non-empty dict"):
        A.dormant_by_query(m, toks, {})
    with pytest.raises(TypeError, match="integer tensor of token ids"):
        A.dormant_by_query(m, "some text", {"trigger": trig})


def test_bigram_sink_needs_the_trained_mechanism():
    """Controls for the toy's sink: the same architecture untrained has no BOS sink and no drain."""
    from interp.toy.model import build_toy_model

    task = interp.toy.toy_task("toy-bigram-backcopy")
    spec = json.loads((interp.toy.registry.CKPT_DIR / "toy-bigram-backcopy.json").read_text())
    untrained = interp.load(build_toy_model(spec).eval())
    toks, _ = task.sample(8, torch.Generator().manual_seed(6))
    other = ~task.is_trigger(toks)
    other[:, :2] = False
    t = A.dormant_by_query(untrained, toks, {"other": other}).set_index("domain")
    assert t.loc["other", "first_token_mass"] < 0.1 and not t.loc["other", "dormant"]
    assert A.value_drains(untrained, toks)[0, 0] > 0.5


def test_head_classifier_rules_calibration_and_kmeans():
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    from interp.analyses import HeadClassifier

    m = interp.load("toy-induction")
    table = A.head_table(A.head_pattern_scores(m, half=24), model_name=m.name)
    known = ["mixed"] * len(table)
    for i, r in table.iterrows():
        if r["layer"] == 0 and r["head"] == 3:
            known[i] = "previous_token"
        if r["layer"] == 1:
            known[i] = "induction"
    with pytest.raises(NotFittedError):
        HeadClassifier().predict(table)
    clf = HeadClassifier().fit(table, known)
    assert list(clf.labels_) == known and list(clf.predict(table)) == known
    assert 0.05 < clf.thresholds_["previous_token_score"] <= 0.84  # between the idle heads and L0H3
    assert clone(clf).get_params() == clf.get_params()  # __init__ only stores parameters
    km = HeadClassifier(method="kmeans", n_clusters=3).fit(table)
    assert km.labels_.shape == (8,) and len(set(km.labels_[table.layer == 1])) == 1  # the induction heads cluster
    with pytest.raises(ValueError, match="method must be"):
        HeadClassifier(method="svm").fit(table)


def test_act_calibration_runs_and_reports_honestly():
    from interp.analyses.calibration import act_calibrate, hidden_sink_positions

    m = interp.load("toy-bigram-backcopy")
    task = interp.toy.toy_task("toy-bigram-backcopy")
    calib, _ = task.sample(1, torch.Generator().manual_seed(1))
    held, _ = task.sample(1, torch.Generator().manual_seed(2))
    sinks = hidden_sink_positions(m, calib, threshold=0.05, min_queries=4)
    assert sinks and all(p > 0 for ps in sinks.values() for p in ps)
    same = act_calibrate(m, calib, held, beta=1.0, threshold=0.05)  # beta = 1 changes nothing: no head is kept
    assert same.heads == [] and same.heldout_loss_after == pytest.approx(same.heldout_loss_before, abs=1e-6)
    assert same.candidates == len(sinks)
    with pytest.raises(ValueError, match="beta"):
        act_calibrate(m, calib, held, beta=2.0)


def test_act_calibration_scales_the_sinks_and_keeps_heads_that_help():
    """On the induction toy some hidden-sink heads lower the loss when scaled (beta = 0.5) and some raise it: the
    intervention must really move the attention (mass on the hidden sinks halves, other heads untouched), the greedy
    search must keep a head that helps, keep each further head only if it lowers the loss, and report the loss of
    what it kept."""
    from interp.analyses import calibration as C

    m = interp.load("toy-induction")
    task = interp.toy.toy_task("toy-induction")
    calib, _ = task.sample(1, torch.Generator().manual_seed(1))
    held, _ = task.sample(1, torch.Generator().manual_seed(2))
    beta = 0.5
    sinks = C.hidden_sink_positions(m, calib, threshold=0.05, min_queries=4)
    assert len(sinks) >= 3
    # the scale changes the attention: measured sink mass before / after, per head
    (l, h), pos = max(sinks.items(), key=lambda kv: len(kv[1]))
    _, before = m.run_with_cache(calib, pattern=True, layers=[l])
    _, after = m.run_with_cache(calib, pattern=True, layers=[l], interventions=C._interventions([(l, h)], sinks, beta))
    p0, p1 = before[f"blocks.{l}.attn.hook_pattern"][0], after[f"blocks.{l}.attn.hook_pattern"][0]  # [head, q, k]
    mass0, mass1 = p0[h][:, pos].sum(), p1[h][:, pos].sum()
    assert mass0 > 1.0  # a real sink: over a query's worth of attention in all
    torch.testing.assert_close(mass1, beta * mass0, atol=1e-5, rtol=1e-5)
    others = [g for g in range(m.cfg.n_heads) if g != h]
    torch.testing.assert_close(p1[others], p0[others])
    torch.testing.assert_close(p1[h].sum(-1), torch.ones(p1.shape[1]))  # the mass went to the other keys

    base = C._loss(m, calib)
    single = {k: C._loss(m, calib, C._interventions([k], sinks, beta)) - base for k in sinks}
    helpful = [k for k, d in single.items() if d < -1e-3]
    harmful = [k for k, d in single.items() if d > 1e-3]
    assert helpful and harmful, single  # the setting is not trivial either way
    res = C.act_calibrate(m, calib, held, beta=beta, threshold=0.05, max_heads=2)
    assert res.candidates == len(sinks) and 1 <= len(res.heads) <= 2
    assert res.heads[0] in helpful  # the first head kept helps on its own, and each one kept lowered the loss
    losses = [base] + [C._loss(m, calib, C._interventions(res.heads[:i + 1], sinks, beta))
                       for i in range(len(res.heads))]
    assert all(b < a - 1e-5 for a, b in zip(losses, losses[1:])), losses
    assert res.calib_loss_before == pytest.approx(base, abs=1e-6)
    assert res.calib_loss_after == pytest.approx(C._loss(m, calib, C._interventions(res.heads, sinks, beta)), abs=1e-6)
    assert res.calib_loss_after < base - 1e-3
    assert res.heldout_loss_after != pytest.approx(res.heldout_loss_before, abs=1e-6)  # held-out really changed


def test_smollm2_massive_activations_drains_and_dormant_heads(smollm2):
    prose = A.text_tokens(smollm2, "prose", n_tokens=128)
    ma = A.massive_activations(smollm2, prose)
    late = ma[ma.layer.between(11, 27)]
    assert (late.first_token_norm_ratio > 30).all() and (late.peak_position == 0).all()
    assert all(dims[0] == 507 for dims in late.top_dims)  # one hidden dimension carries it (Sun et al.)
    drains = A.value_drains(smollm2, prose).mean(1)
    assert (drains[12:29] < 0.5).all()  # the sink token's value is drained where the sinks are
    d = A.dormant_heads(smollm2, {"prose": prose, "random": A.random_tokens(smollm2, 128, n_prompts=1)})
    assert set(d.domain) == {"prose", "random"} and len(d) == 2 * 270
    assert d.dormant.any() and (d[d.dormant].alpha_first > 0.5).all()


def test_minference_shapes_from_statistics():
    n = 100
    km = torch.ones(1, 3, n)  # uniform columns
    km[0, 1, 10] = 60.0  # head 1: one vertical line takes most of the mass
    share = A.vertical_share(km, n_queries=n, top_frac=0.01)
    assert share[0, 1] > 0.5 and share[0, 0] < 0.05
    labels = A.shape_labels({"a_shape_score": torch.tensor([[0.9, 0.3, 0.2]]),
                             "vertical_score": torch.tensor([[0.0, 0.5, 0.1]])})
    assert labels == [["a_shape", "vertical_slash", "block_sparse"]]


def test_gemma3_local_layers_are_a_shaped(gemma3):
    toks = A.text_tokens(gemma3, "prose", n_tokens=700)
    s = A.shape_scores(gemma3, toks, sink_tokens=1, local_window=512)
    labels = A.shape_labels(s)
    for l, w in enumerate(gemma3.cfg.layer_windows):
        if w is not None:
            assert labels[l] == ["a_shape"] * 4, (l, labels[l])
