"""Compatibility names: batch classification lives in `interp.batch.classify` (the job) and `interp.batch.runner`
(shards, atomic writes, resume)."""

from .batch.classify import COLUMNS, SHARDS, classify, model_table, plan_context, write_outputs
from .batch.runner import atomic_write_json, slug

__all__ = ["COLUMNS", "SHARDS", "atomic_write_json", "classify", "model_table", "plan_context", "slug",
           "write_outputs"]
