"""Train the toy models and write checkpoints + logs.

    python -m interp.toy.train toy-induction toy-needle            # deterministic, minutes on the 2-core CPU
    python -m interp.toy.train toy-bigram-backcopy --device cuda   # minutes on a GPU (hours on the CPU)

Each run writes interp/toy/checkpoints/{name}.safetensors, {name}.json (architecture + task) and {name}.log.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..batch.arguments import writable_folder
from .model import build_toy_model
from .registry import CKPT_DIR, TOYS
from .tasks import make_task

RECIPES = {
    "toy-induction": dict(
        spec=dict(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_ctx=128, attn_only=True, init_seed=0),
        steps=2500, batch=64, lr=2e-3, seed=0),
    # After Guo et al.'s 1-layer setup: one layer, one head, width 256 with an MLP, character bigram chain, 3
    # triggers, sequences of 256, AdamW wd 1e-4 betas (0.9, 0.99), loss on every position. Their constant lr 3e-4
    # gives only a weak, wandering sink in this Llama-style model (BOS attention from non-trigger queries 0.22 after
    # 15.5k steps of batch 128, logged; earlier, unlogged batch-512 runs looked the same); a one-cycle lr peaking at
    # 1e-3 does better, but the sink's strength depends on the seed: 0.66 / 0.93 / 0.32 for seeds 0 / 1 / 2, and
    # training twice as long does not settle it (seeds 0 / 2 end at 0.51 / 0.20 after 30k steps). We ship seed 1,
    # the clearest sink; docs/gpu/bigram_sweep.log has the runs. bf16 autocast on the GPU (--device cuda: 7 minutes
    # on an H100 shared by 4 runs); the 2-core CPU would need hours. See examples/gpu_train_bigram.sh.
    "toy-bigram-backcopy": dict(
        spec=dict(d_model=256, d_mlp=1024, n_layers=1, n_heads=1, n_ctx=256, attn_only=False, init_seed=0),
        steps=15000, batch=128, lr=1e-3, wd=1e-4, betas=(0.9, 0.99), schedule="onecycle", loss="all", amp=True,
        seed=1),
    "toy-needle": dict(
        spec=dict(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_ctx=256, attn_only=True, init_seed=0),
        steps=3000, batch=64, lr=2e-3, seed=0),
}


def masked_loss(logits: torch.Tensor, toks: torch.Tensor, mask: torch.Tensor):
    """Cross-entropy of predicting toks[t+1] at positions where mask[t]; also the accuracy there."""
    pred = logits[:, :-1]
    target = toks[:, 1:]
    m = mask[:, :-1]
    loss = F.cross_entropy(pred[m], target[m])
    acc = (pred[m].argmax(-1) == target[m]).float().mean()
    return loss, acc


@torch.no_grad()
def diagnostics(model, task, toks: torch.Tensor) -> dict:
    """Training-time view of the mechanism (Bigram-Backcopy only), in the copy layer (the layer whose heads, averaged,
    attend most to the previous token from trigger queries; named when there are several layers): the attention
    on BOS from non-trigger queries (the sink) and on the previous token from trigger queries (the copy)."""
    if task.name != "bigram_backcopy":
        return {}
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        atts = model(toks, output_attentions=True).attentions  # per layer [batch, head, query, key]
    finally:
        model.set_attn_implementation(impl)
    trig = task.is_trigger(toks)
    rest = ~trig
    rest[:, :2] = False  # BOS and the first token
    per_layer = []
    for att in atts:
        att = att.mean(1)  # heads averaged -> [batch, query, key]
        prev = torch.diagonal(att, offset=-1, dim1=1, dim2=2)  # query i -> key i - 1, for i >= 1
        per_layer.append((prev[trig[:, 1:]].mean().item(), att[:, :, 0][rest].mean().item()))
    layer = max(range(len(per_layer)), key=lambda l: per_layer[l][0])
    out = {"bos_attn_nontrigger": round(per_layer[layer][1], 4), "prev_attn_trigger": round(per_layer[layer][0], 4)}
    return out if len(per_layer) == 1 else {"copy_layer": layer, **out}


def _sampler(task, device: str, chunk: int = 32):
    """(sample(batch, gen), generator factory). The Bigram-Backcopy chain samples on the training device, `chunk`
    batches at a time (its Markov loop is sequential in the position, so one loop over 32 batches' rows costs as
    much as one over a single batch's). The other tasks sample on the CPU one batch at a time, as they always have,
    so their checkpoints reproduce exactly."""
    if task.name == "bigram_backcopy":
        buffer: list = []

        def sample(b, g):
            if b <= 64:  # probes and evaluation: exactly this many rows
                return task.sample(b, g, device=device)
            if not buffer:
                toks, mask = task.sample(b * chunk, g, device=device)
                buffer.extend(zip(toks.split(b), mask.split(b)))
            return buffer.pop(0)

        return sample, (lambda s: torch.Generator(device=device).manual_seed(s))

    def sample(b, g):
        toks, mask = task.sample(b, g)
        return toks.to(device), mask.to(device)

    return sample, (lambda s: torch.Generator().manual_seed(s))


class Diverged(ValueError):
    """Training ended with a non-finite loss or weights; nothing was written."""


def train(name: str, out_dir: Path = CKPT_DIR, log=print, device: str = "cpu", **overrides) -> dict:
    from safetensors.torch import save_file

    if name not in RECIPES:
        raise ValueError(f"unknown toy {name!r}; choose from {list(RECIPES)}")
    recipe = dict(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})
    task = make_task(TOYS[name].task, recipe.get("task_args"))  # experiments: e.g. {"source": "random"}
    spec = dict(recipe["spec"], name=name, task=task.name, bos=0, task_args=recipe.get("task_args", {}))
    spec.setdefault("vocab_size", task.vocab_size)
    torch.manual_seed(recipe["seed"])
    model = build_toy_model(spec).to(device)
    model.set_attn_implementation("sdpa")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe.get("wd", 0.01),
                            betas=tuple(recipe.get("betas", (0.9, 0.98))))
    if recipe.get("schedule", "onecycle") == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=recipe["steps"],
                                                    pct_start=0.1)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    sample, generator = _sampler(task, device, recipe.get("sample_chunk", 32))
    gen, eval_gen = generator(recipe["seed"]), generator(10_000)
    probe, _ = sample(64, generator(20_000))
    lines = [f"# {name}: {TOYS[name].description}", f"# recipe: {json.dumps(recipe)} device: {device}"]
    score_all = recipe.get("loss", "masked") == "all"  # every position predicts its next token (Guo et al.)
    autocast = dict(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=recipe.get("amp", False))
    t0 = time.time()
    for step in range(1, recipe["steps"] + 1):
        toks, mask = sample(recipe["batch"], gen)
        if score_all:
            mask = torch.ones_like(mask)
        with torch.autocast(**autocast):
            logits = model(toks).logits
        loss, acc = masked_loss(logits.float(), toks, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % recipe.get("log_every", 100) == 0 or step == 1:
            diag = diagnostics(model, task, probe)
            line = f"step {step:5d} loss {loss.item():.4f} acc {acc.item():.3f} t {time.time() - t0:.0f}s"
            line += "".join(f" {k} {v}" for k, v in diag.items())
            lines.append(line)
            log(line)
        if time.time() - t0 > recipe.get("max_seconds", float("inf")):
            lines.append(f"# stopped at step {step}: max_seconds {recipe['max_seconds']} reached")
            log(lines[-1])
            break
    model.eval()
    with torch.no_grad():
        toks, mask = _sampler(task, device, chunk=1)[0](512, eval_gen)
        loss, acc = masked_loss(model(toks).logits, toks, mask)
    result = {"eval_loss": round(loss.item(), 4), "eval_acc": round(acc.item(), 4),
              "train_seconds": round(time.time() - t0, 1), **diagnostics(model, task, toks[:64])}
    lines.append(f"# eval on 512 fresh sequences: {json.dumps(result)}")
    log(lines[-1])
    bad = next((k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()),
               None)
    if bad is not None or not math.isfinite(result["eval_loss"]):  # never a NaN checkpoint over a working one
        raise Diverged(f"{name}: training diverged (eval loss {result['eval_loss']}"
                         f"{f', non-finite weights in {bad}' if bad else ''}) with lr {recipe['lr']:g}; no checkpoint "
                         f"written to {out_dir}; try a smaller --lr (the recipe's is {RECIPES[name]['lr']:g})")
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / f"{name}.safetensors"))
    spec["eval"] = result
    (out_dir / f"{name}.json").write_text(json.dumps(spec, indent=1) + "\n")
    (out_dir / f"{name}.log").write_text("\n".join(lines) + "\n")
    return result


def _int_at_least(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if v < low or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}{f' and <= {high}' if high else ''}, "
                                             f"got {v}")
        return v
    return parse


def _finite(positive: bool):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise argparse.ArgumentTypeError(f"must be a finite number {'> 0' if positive else '>= 0'}, got {text!r}")
        return v
    return parse


def _device_error(text: str) -> str | None:
    """Why `text` is not a device this machine can train on, or None."""
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        return f"--device {text!r} is not a device; use cpu, cuda or cuda:N"
    if dev.type not in ("cpu", "cuda"):
        return f"--device must be cpu, cuda or cuda:N, got {text!r}"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {text!r}: no CUDA device is available here; use --device cpu"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"--device {text!r}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}"
    return None


def _out_error(out: Path) -> str | None:
    """Why checkpoints cannot be written to the folder `out` (created here when missing), or None."""
    if out.exists() and not out.is_dir():
        return f"--out {str(out)!r} is a file, not a folder"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"--out {str(out)!r}: cannot create the folder ({e.strerror or e})"
    if not writable_folder(out):  # (tried: os.access says yes to root on a read-only mount)
        return f"--out {str(out)!r} is not writable"
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", default=list(RECIPES), help=f"toys to train (default: all of {list(RECIPES)})")
    p.add_argument("--out", type=Path, default=CKPT_DIR)
    p.add_argument("--steps", type=_int_at_least(1), help="override the recipe (experiments)")
    p.add_argument("--lr", type=_finite(positive=True))
    p.add_argument("--wd", type=_finite(positive=False))
    p.add_argument("--batch", type=_int_at_least(1))
    p.add_argument("--seed", type=_int_at_least(0, 2**63 - 1))
    p.add_argument("--device", default="cpu", help="cpu or cuda (the Bigram-Backcopy recipe wants a GPU)")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in RECIPES]  # every name checked before any training
    if unknown:
        p.error(f"unknown toy {unknown[0]!r}; choose from {list(RECIPES)}")
    for why in (_device_error(args.device), _out_error(args.out)):
        if why:
            p.error(why)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for n in args.names:
        print(f"== training {n}", flush=True)
        try:
            print(train(n, args.out, device=args.device, steps=args.steps, lr=args.lr, wd=args.wd, batch=args.batch,
                        seed=args.seed), flush=True)
        except Diverged as e:  # one line, no traceback
            p.exit(2, f"{p.prog}: error: {e}\n")
        except (torch.OutOfMemoryError, RuntimeError) as e:  # a --batch too large for the device (CPU: RuntimeError)
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not isinstance(e, torch.OutOfMemoryError) and "allocate" not in text:
                raise
            p.exit(2, f"{p.prog}: error: {n}: out of memory on {args.device} ({text[:160]}); try a smaller "
                      "--batch\n")
        except KeyboardInterrupt:
            p.exit(130, f"{p.prog}: interrupted while training {n}; its checkpoint was not written\n")


if __name__ == "__main__":
    main()
