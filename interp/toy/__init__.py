"""Toy models trained in-repo on synthetic tasks with known ground truth (see interp/toy/README.md)."""

from .registry import TOYS, load_toy, toy_task

__all__ = ["TOYS", "load_toy", "toy_task"]
