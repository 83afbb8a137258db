"""Toy model registry: name -> architecture, task and checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CKPT_DIR = Path(__file__).parent / "checkpoints"


@dataclass(frozen=True)
class Toy:
    task: str
    description: str


TOYS = {
    "toy-induction": Toy("induction", "2-layer attention-only model trained on repeated random tokens "
                                      "(previous-token head in layer 0 -> induction head in layer 1)"),
    "toy-bigram-backcopy": Toy("bigram_backcopy", "1-layer model on the Bigram-Backcopy task (Guo et al. 2024): "
                                                  "a copy head active on trigger tokens and dormant (parked on BOS, "
                                                  "whose value is drained) elsewhere"),
    "toy-needle": Toy("needle", "2-layer attention-only model that copies a needle's value tokens "
                                "from a random haystack (retrieval heads)"),
}


def load_toy(name: str):
    from .model import load_checkpoint

    if name not in TOYS:
        raise ValueError(f"unknown toy model {name!r}; available: {', '.join(TOYS)}")
    return load_checkpoint(CKPT_DIR / f"{name}.safetensors", CKPT_DIR / f"{name}.json")


def toy_task(name: str):
    """The task the toy's checkpoint was trained on (its spec's task_args applied)."""
    from .tasks import make_task

    if name not in TOYS:
        raise ValueError(f"unknown toy model {name!r}; available: {', '.join(TOYS)}")
    spec = CKPT_DIR / f"{name}.json"
    return make_task(TOYS[name].task, json.loads(spec.read_text()).get("task_args") if spec.exists() else None)
