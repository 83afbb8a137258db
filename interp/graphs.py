"""CUDA graphs for short inputs: capture one forward with its statistics once, replay it for new prompts.

At 1k tokens a model's forward is bound by the host, not the GPU: Python, the per-layer attention calls and their
kernel launches (`docs/gpu/kspeed_notes.md`, round 5: 190-260 us of host time per attention call with statistics
against 56-74 us of kernels). A CUDA graph records the kernels of one forward and replays them with one launch:

    run = interp.graphs.GraphedRun(model, ids, stats="all")     # ids: [batch, pos] token ids on the GPU
    logits, cache = run()                                       # replays the captured forward
    logits, cache = run(other_ids)                              # same shape: copied into the graph's input

Measured on an H100 (`python examples/cuda_graphs_gpu.py`): a 30-layer SmolLM2-shaped model with every statistic
at every layer replays at 1.03x the replayed HF SDPA forward at 1k tokens (`docs/gpu/cuda_graphs_api_round5.log`,
this class; replays equal eager `run_with_cache` results), and the same capture done by hand at 1.02x (1k) and
0.89x (4k) (`docs/gpu/cuda_graphs_round5.log`), where the eager call takes 1.4-2.4x the eager HF forward.

What a graph fixes: the shapes (batch and length of `tokens`), the statistics and hook points captured, the hook
functions' effects (they run once, at capture: the cache holds the capture's tensors, which every replay
overwrites in place — copy what you keep), and interventions (none here). No padding mask (full rows only).
"""

from __future__ import annotations

import torch

from .cache import ActivationCache
from .hooks import HOOK_OF_STAT, parse_hook_name
from .input_checks import hook_names, stat_selection
from .kernels.cuda_graph import capture
from .model import HookedModel
from .validate import int_arg, tokens_arg

MAX_WARMUP = 1000  # warm-up forwards before the capture (the default 2 is enough; more only costs time)


class GraphedRun:
    """A HookedModel forward with statistics (and any other hook points named in `names`) captured as a CUDA graph.

    `tokens`: integer token ids [batch, pos] on the model's CUDA device, no padding. `stats`, `layers`,
    `sink_tokens`, `local_window` as in `run_with_cache` (no span). Calling the object replays the graph and returns
    `(logits, cache)`: the graph's own output tensors, overwritten by the next call."""

    def __init__(self, model: HookedModel, tokens: torch.Tensor, *, stats="all", layers=None, names=(),
                 sink_tokens: int = 4, local_window: int = 64, warmup: int = 2):
        if not isinstance(model, HookedModel):
            raise TypeError(f"GraphedRun needs an interp HookedModel (interp.load(...)), got {type(model).__name__}")
        names = hook_names(() if names is None else names)
        for n in names:
            parse_hook_name(n, model.cfg.n_layers)  # a TypeError / ValueError with close matches, before sorting
        stat_names = stat_selection(stats, None)  # no span here: span_mass by name is refused, a group drops it
        layer_list = model._layers(layers)
        int_arg("sink_tokens", sink_tokens, minimum=0, where="GraphedRun")
        int_arg("local_window", local_window, minimum=1, where="GraphedRun")
        warmup = int_arg("warmup", warmup, minimum=1, where="GraphedRun (autotuning and caches happen in the warm-up)")
        if warmup > MAX_WARMUP:  # each warm-up call is a whole forward: 10**12 of them never end
            raise ValueError(f"GraphedRun: warmup must be at most {MAX_WARMUP} forwards (a few fill the autotuning "
                             f"and caches), got {warmup}")
        chosen = sorted(set(names) | {f"blocks.{l}.attn.{HOOK_OF_STAT[s]}" for l in layer_list for s in stat_names})
        if not chosen:
            raise ValueError("GraphedRun: nothing to capture (stats and names select no hook point)")
        if model.device.type != "cuda":
            raise ValueError(f"GraphedRun needs a model on a CUDA device (CUDA graphs), got one on {model.device}")
        tokens = tokens_arg(tokens, model, where="GraphedRun", tensor_only=True, dims=(2,))  # vocabulary, context
        if tokens.device != model.device:
            raise ValueError(f"GraphedRun: tokens are on {tokens.device}, the model on {model.device}")
        self.model = model
        self.tokens = tokens.to(torch.long, copy=True)  # the graph's input (int64 ids): run(new) copies into it
        self._cache = ActivationCache(n_layers=model.cfg.n_layers)

        def keep(t, hook):
            self._cache[hook.name] = t.detach()

        def forward():
            return model.model(input_ids=self.tokens, use_cache=False).logits

        with torch.no_grad(), model.hooks(fwd_hooks=[(n, keep) for n in chosen], sink_tokens=sink_tokens,
                                          local_window=local_window):
            # autotuning, cuDNN plans and lazy caches in the warm-up calls, before the capture
            self.graph, self.logits = capture(forward, warmup, model.device)

    def __call__(self, tokens: torch.Tensor | None = None):
        """Replay (after copying `tokens`, of the captured shape, into the graph's input): (logits, cache)."""
        if tokens is not None:
            tokens_arg(tokens, self.model, where="GraphedRun", tensor_only=True, dims=(2,))  # a bad id: device error
            if tokens.shape != self.tokens.shape:
                raise ValueError(f"GraphedRun: tokens must have the captured shape {tuple(self.tokens.shape)}, got "
                                 f"{tuple(tokens.shape)}")
            self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits, self._cache
