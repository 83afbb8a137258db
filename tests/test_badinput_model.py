"""Bad-input sweep, loading and model items: options of `interp.load` applied to already-loaded models (dtype,
backend, NaN and float64 weights), span_mass hook points without a span, token helpers (to_string, uint64 Tokens,
generate's prepend_bos, logits_at), the toy trainer's command line, and environment variables (INTERP_DEVICE, the
kernels' flags, a mistyped relative folder taken for a hub id)."""


import pytest
import torch

import interp
from interp.tokens import Tokens
from interp.toy import load_toy

IDS = torch.tensor([[0, 5, 9, 17, 5, 9, 17, 3], [0, 7, 8, 2, 7, 8, 2, 4]])
SPAN_HOOK = "blocks.0.attn.hook_query_span_mass"


@pytest.fixture(scope="module")
def toy():
    return interp.load("toy-induction")


# ------------------------------------------------------------------ item 3: load() of an already-loaded model
def test_load_applies_backend_and_dtype_to_a_hooked_model():
    m = interp.load("toy-induction")
    assert interp.load(m, backend="reference") is m and m.backend == "reference"
    assert interp.load(m).backend == "reference"  # not given: the model's own setting is kept
    assert interp.load(m, dtype="bfloat16").dtype == torch.bfloat16
    assert m(IDS).dtype == torch.bfloat16
    hf = load_toy("toy-induction")
    assert interp.load(hf, dtype=torch.float16, backend="reference").dtype == torch.float16


def test_nan_weights_of_a_loaded_module_are_refused():
    hf = load_toy("toy-induction")
    with torch.no_grad():
        hf.model.layers[1].self_attn.o_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"model.layers.1.self_attn.o_proj.weight .* 1 non-finite"):
        interp.load(hf)
    m = interp.load(hf, check_weights=False)  # the check can be turned off, as for paths
    with pytest.raises(ValueError, match="non-finite"):
        interp.load(m)  # a HookedModel is checked too


def test_float64_module_is_refused_when_wrapped_unless_dtype_converts_it():
    hf = load_toy("toy-induction").to(torch.float64)
    with pytest.raises(ValueError, match=r"is torch.float64; interp's attention kernels take .*dtype='float32'"):
        interp.load(hf)
    with pytest.raises(ValueError, match="is torch.float64"):
        interp.HookedModel(hf)
    m = interp.load(hf, dtype="float32")
    assert m.dtype == torch.float32 and m(IDS).shape == (2, 8, 64)


# ------------------------------------------------------------------ item 5: span_mass hook points without a span
def test_names_filter_matching_everything_skips_span_mass_without_a_span(toy):
    _, cache = toy.run_with_cache(IDS, names_filter=lambda n: True)
    assert set(cache.keys()) == set(toy.hook_names()) - {f"blocks.{l}.attn.hook_query_span_mass" for l in range(2)}
    _, cache = toy.run_with_cache(IDS, names_filter=lambda n: ".attn." in n, span=(1, 4))
    assert SPAN_HOOK in cache.keys()


@pytest.mark.parametrize("call", [
    lambda m: m.run_with_cache(IDS, names=[SPAN_HOOK]),
    lambda m: m.run_with_cache(IDS, names=m.hook_names()),
    lambda m: m.run_with_cache(IDS, names_filter=lambda n: "span" in n),
    lambda m: m.run_with_hooks(IDS, fwd_hooks=[(SPAN_HOOK, lambda t, hook: None)]),
], ids=["names", "all-names", "filter-only-span", "fwd_hooks"])
def test_span_mass_hook_points_asked_for_without_a_span_are_named(toy, call):
    with pytest.raises(ValueError, match=rf"hook point '{SPAN_HOOK}' is the attention mass on a span .* span=\("):
        call(toy)


# ------------------------------------------------------------------ item 14: token helpers
class _Tok:
    """A tokenizer stand-in: decodes ids as numbers."""
    bos_token_id = 0
    pad_token_id = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [1 + ord(c) % 60 for c in text]}

    def decode(self, ids):
        return " ".join(str(int(i)) for i in ids)

    def __len__(self):
        return 64


def test_to_string_checks_ids_and_decodes_rows():
    m = interp.load("toy-induction", tokenizer=_Tok())
    assert m.to_string([1, 2]) == "1 2" and m.to_string(torch.tensor([3])) == "3" and m.to_string(5) == "5"
    assert m.to_string(torch.tensor([[1, 2], [3, 4]])) == ["1 2", "3 4"]
    for bad, err, msg in [([10**7], ValueError, r"outside the vocabulary \[0, 64\): \[10000000\]"),
                          ([-1], ValueError, r"outside the vocabulary \[0, 64\): \[-1\]"),
                          (torch.tensor([1.5]), TypeError, "ids must be an int id.*float32 tensor"),
                          ([1.5], TypeError, r"ids\[0\] is float 1.5"),
                          ("12", TypeError, "ids must be an int id"),
                          (torch.ones(1, 1, 1, dtype=torch.long), ValueError, r"shape \(1, 1, 1\)")]:
        with pytest.raises(err, match=msg):
            m.to_string(bad)


def test_uint64_tokens_generate_prepend_bos_and_logits_at_forms(toy):
    ref = toy(IDS[:1, :3])
    torch.testing.assert_close(toy(Tokens(IDS[:1, :3].to(torch.uint64), None, [3])), ref)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        toy(Tokens(torch.tensor([[1, 2**63]], dtype=torch.uint64), None, [2]))
    assert torch.equal(toy.generate([[5, 9]], max_new_tokens=2, prepend_bos=True),
                       toy.generate([[0, 5, 9]], max_new_tokens=2))
    full = toy.run_with_hooks(IDS)
    torch.testing.assert_close(toy.run_with_hooks(IDS, logits_at=slice(-1, None)), full[:, -1:])
    for bad, err in [("last", TypeError), (slice(None, None, 0), TypeError), (slice(5, 2), ValueError),
                     (object(), TypeError)]:
        with pytest.raises(err, match="logits_at"):
            toy.run_with_hooks(IDS, logits_at=bad)


# ------------------------------------------------------------------ item 12: the toy trainer's command line
@pytest.mark.parametrize("argv, msg", [
    (["--device", "gpu"], "--device 'gpu' is not a device"),
    (["--device", "meta"], "--device must be cpu, cuda or cuda:N"),
    (["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
    (["--steps", "-1"], "argument --steps: must be an integer >= 1"),
    (["--batch", "0"], "argument --batch: must be an integer >= 1"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0"),
    (["--wd", "-1"], "argument --wd: must be a finite number >= 0"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["--out", "/etc/passwd"], "--out '/etc/passwd' is a file, not a folder"),
    (["toy-induction", "toy-foo"], "unknown toy 'toy-foo'"),
])
def test_toy_trainer_cli_checks_every_argument_before_training(monkeypatch, capsys, tmp_path, argv, msg):
    from interp.toy import train as T

    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("trained before the arguments were checked"))
    if "--out" not in argv:
        argv = argv + ["--out", str(tmp_path)]
    if not any(a.startswith("toy-") for a in argv):
        argv = ["toy-induction"] + argv
    with pytest.raises(SystemExit) as e:
        T.main(argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            T.main(["toy-induction", "--device", "cuda", "--out", str(tmp_path)])
        assert "no CUDA device is available" in capsys.readouterr().err


# ------------------------------------------------------------------ item 16: environment variables
def test_kernel_flags_take_the_usual_spellings():
    from interp.kernels.triton_forward import flag_from_env, wide_window_from_env

    for on in ("1", "true", "On", "YES", " yes "):
        assert flag_from_env("INTERP_AUTOTUNE", on, False) is True
    for off in ("0", "false", "off", "No"):
        assert flag_from_env("INTERP_AUTOTUNE", off, True) is False
    assert flag_from_env("INTERP_STATS_TRIAL_CONFIGS", None, False) is False
    assert flag_from_env("INTERP_AUTOTUNE", "", True) is True
    with pytest.raises(ValueError, match=r"INTERP_STATS_TRIAL_CONFIGS='maybe': use 1/true/on/yes .* or 0/false"):
        flag_from_env("INTERP_STATS_TRIAL_CONFIGS", "maybe", False)
    assert wide_window_from_env(" 512 ") == 512
    with pytest.raises(ValueError, match="INTERP_WIDE_WINDOW must be a positive number of keys"):
        wide_window_from_env("\u00b2")  # str.isdigit() takes it, int() does not


def test_interp_device_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("INTERP_DEVICE", "meta")
    with pytest.raises(ValueError, match="INTERP_DEVICE='meta': the device must be 'cpu', 'cuda' or 'cuda:N'"):
        interp.load("toy-induction")
    if not torch.cuda.is_available():
        monkeypatch.setenv("INTERP_DEVICE", "cuda")
        with pytest.raises(ValueError, match="INTERP_DEVICE='cuda' asks for CUDA, but no CUDA device"):
            interp.load("toy-induction")
    with pytest.raises(ValueError, match="device='meta': the device must be"):
        interp.load("toy-induction", device="meta")


def test_a_cuda_index_past_the_devices_is_named(monkeypatch):
    """cuda:7 on a machine with one GPU: a clear error with the devices there are, not one from inside torch (round
    22's sweep; the device count is faked so that the CPU runs the check)."""
    from interp import zoo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device='cuda:7' asks for cuda:7, but this machine has 1 CUDA device "
                                         r"\(cuda:0..cuda:0\)"):
        zoo._device_arg("cuda:7", "device='cuda:7'")
    assert zoo._device_arg("cuda:0", "device='cuda:0'") == torch.device("cuda:0")


def test_mistyped_relative_folder_is_named_and_hub_ids_still_resolve(monkeypatch, tmp_path):
    """'models/smo' where ./models holds 'smol': the hub is tried (a local folder may share an organisation's name),
    and its error names the close match."""
    from interp.zoo import resolve

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # (no hub here: the lookup fails at once)
    (tmp_path / "models" / "smol").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"could not load 'models/smo'.*the folder 'models' exists here but holds no "
                                         r"'smo': did you mean 'models/smol'\?"):
        interp.load("models/smo")
    (tmp_path / "google" / "gemma-2-2b").mkdir(parents=True)
    assert resolve("google/gemma-3-270m").kind == "hub"  # not refused for the local 'google' folder
    assert resolve("org/name").kind == "hub" and resolve("HuggingFaceTB/SmolLM2-135M").kind == "hub"


def test_options_that_do_not_apply_to_a_pattern_read_transformer_lens_model_are_refused(monkeypatch):
    import types

    class Fake(torch.nn.Module):  # a TransformerLens model without an HF model inside: read through its patterns
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(3))
            self.cfg = types.SimpleNamespace(n_layers=1, n_heads=2, d_model=32, d_vocab=50, n_ctx=16)

        def run_with_cache(self, *a, **k):
            pass

    Fake.__module__ = "transformer_lens.fake"
    tl = Fake()
    monkeypatch.setenv("INTERP_DEVICE", "cpu")  # the default device is for models interp runs: no error
    assert isinstance(interp.load(tl), interp.TLPatternModel)
    with pytest.raises(ValueError, match="load: device= does not apply to a Fake"):  # was AttributeError 'device'
        interp.load(tl, device="cpu")
    with pytest.raises(ValueError, match="load: dtype=, backend= do not apply"):
        interp.load(tl, dtype="float16", backend="reference")
    with torch.no_grad():
        tl.w[0] = float("nan")
    with pytest.raises(ValueError, match="parameter w .* non-finite"):
        interp.load(tl)
