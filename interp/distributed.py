"""Classification shards as Ray tasks, across the GPUs and nodes of a Ray cluster (optional extra: `ray`).

Each task loads its model, computes one shard and returns it; the driver writes every shard atomically, exactly as
a local run does, so `--resume` and the final table are the same whichever way the shards ran.
"""

from __future__ import annotations

from pathlib import Path


def _shard_task(model_name: str, shard: str, context, prompts, device, dtype, seed):
    from .classify import plan_context, run_shard
    from .zoo import load

    model = load(model_name, device=device, dtype=dtype)
    ctx, _ = plan_context(model, context)
    return {"shape": [model.cfg.n_layers, model.cfg.n_heads], "name": model.name, "context": ctx,
            "scores": run_shard(model, shard, ctx, prompts, seed)}


def run_on_ray(jobs, out, *, context, prompts, device, dtype, seed, address: str) -> dict:
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs the optional dependency: pip install 'interp-heads[ray]'") from None
    from .classify import atomic_write_json, slug

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    task = ray.remote(num_gpus=1 if device == "cuda" else 0, num_cpus=1)(_shard_task)
    refs = {job: task.remote(job[0], job[1], context, prompts, device, dtype, seed) for job in jobs}
    results = {}
    for job, ref in refs.items():
        shard = ray.get(ref)
        atomic_write_json(Path(out) / "shards" / slug(job[0]) / f"{job[1]}.json", shard)
        results[job] = shard
    return results
