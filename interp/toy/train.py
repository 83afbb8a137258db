"""Train the toy models deterministically on the 2-core CPU and write checkpoints + logs.

    python -m interp.toy.train                 # all toys
    python -m interp.toy.train toy-induction   # one

Each run writes interp/toy/checkpoints/{name}.safetensors, {name}.json (architecture + task) and {name}.log.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .model import build_toy_model
from .registry import CKPT_DIR, TOYS
from .tasks import TASKS

RECIPES = {
    "toy-induction": dict(
        spec=dict(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_ctx=128, attn_only=True, init_seed=0),
        steps=2500, batch=64, lr=2e-3, seed=0),
    "toy-bigram-backcopy": dict(
        spec=dict(vocab_size=64, d_model=64, d_mlp=256, n_layers=1, n_heads=1, n_ctx=128, attn_only=False,
                  init_seed=0),
        steps=2500, batch=64, lr=2e-3, seed=0),
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


def train(name: str, out_dir: Path = CKPT_DIR, log=print, **overrides) -> dict:
    from safetensors.torch import save_file

    recipe = dict(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})
    task = TASKS[TOYS[name].task]
    spec = dict(recipe["spec"], name=name, task=task.name, bos=0)
    torch.manual_seed(recipe["seed"])
    model = build_toy_model(spec)
    model.set_attn_implementation("sdpa")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe.get("wd", 0.01), betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=recipe["steps"], pct_start=0.1)
    gen = torch.Generator().manual_seed(recipe["seed"])
    lines = [f"# {name}: {TOYS[name].description}", f"# recipe: {json.dumps(recipe)}"]
    t0 = time.time()
    for step in range(1, recipe["steps"] + 1):
        toks, mask = task.sample(recipe["batch"], gen)
        loss, acc = masked_loss(model(toks).logits, toks, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == 1:
            line = f"step {step:5d} loss {loss.item():.4f} acc {acc.item():.3f} t {time.time() - t0:.0f}s"
            lines.append(line)
            log(line)
    model.eval()
    with torch.no_grad():
        eval_gen = torch.Generator().manual_seed(10_000)
        toks, mask = task.sample(512, eval_gen)
        loss, acc = masked_loss(model(toks).logits, toks, mask)
    result = {"eval_loss": round(loss.item(), 4), "eval_acc": round(acc.item(), 4),
              "train_seconds": round(time.time() - t0, 1)}
    lines.append(f"# eval on 512 fresh sequences: {json.dumps(result)}")
    log(lines[-1])
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / f"{name}.safetensors"))
    spec["eval"] = result
    (out_dir / f"{name}.json").write_text(json.dumps(spec, indent=1) + "\n")
    (out_dir / f"{name}.log").write_text("\n".join(lines) + "\n")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", default=list(RECIPES), help=f"toys to train (default: all of {list(RECIPES)})")
    p.add_argument("--out", type=Path, default=CKPT_DIR)
    p.add_argument("--steps", type=int, help="override the recipe (experiments)")
    p.add_argument("--lr", type=float)
    p.add_argument("--wd", type=float)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for n in args.names:
        if n not in RECIPES:
            p.error(f"unknown toy {n!r}; choose from {list(RECIPES)}")
        print(f"== training {n}", flush=True)
        print(train(n, args.out, steps=args.steps, lr=args.lr, wd=args.wd), flush=True)


if __name__ == "__main__":
    main()
