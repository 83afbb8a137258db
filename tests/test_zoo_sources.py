"""Where bundled weights come from on a machine without the weights package, and the INTERP_DEVICE default."""

import importlib.util

import pytest
import torch

import interp
from interp import zoo


def _hide_package(monkeypatch, package: str):
    real = importlib.util.find_spec

    def find_spec(name, *a, **k):
        return None if name == package else real(name, *a, **k)

    monkeypatch.setattr(zoo.importlib.util, "find_spec", find_spec)


def test_bundled_gguf_from_cache_dir_when_package_missing(tmp_path, monkeypatch):
    b = zoo.BUNDLED["smollm2-135m"]
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    _hide_package(monkeypatch, b.package)
    with pytest.raises(ValueError, match="not installed.*put its GGUF file at .*SmolLM2-135M-Instruct.Q4_1.gguf"):
        zoo._gguf_path(b)
    assert zoo.weights_source("smollm2-135m").startswith("missing: ")
    local = tmp_path / "gguf" / b.gguf_name
    local.parent.mkdir()
    local.write_bytes(b"GGUF")  # only the path is resolved here, nothing is read
    assert zoo._gguf_path(b) == local
    assert zoo.weights_source("smollm2-135m") == str(local)


def test_assembled_bundle_needs_no_package_once_assembled(tmp_path, monkeypatch):
    b = zoo.BUNDLED["gemma3-270m"]
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    _hide_package(monkeypatch, b.package)
    with pytest.raises(ValueError, match="not installed"):
        zoo._gguf_path(b)
    local = tmp_path / "gguf" / b.gguf_name
    local.parent.mkdir()
    local.write_bytes(b"GGUF")
    assert zoo._gguf_path(b) == local


def test_interp_device_default(monkeypatch):
    monkeypatch.setenv("INTERP_DEVICE", "cpu")
    m = interp.load("toy-induction")
    assert m.device == torch.device("cpu")
    monkeypatch.setenv("INTERP_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="INTERP_DEVICE='gpu0' is not a device"):
        interp.load("toy-induction")
    monkeypatch.delenv("INTERP_DEVICE")
    assert zoo.default_device() is None
