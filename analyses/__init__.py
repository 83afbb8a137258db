"""Head analyses over captured statistics: sinks, head patterns, the per-head table.

Installed as `interp.analyses`.
"""

from . import duo, retrieval
from . import circuits, tasks
from .estimator import HeadClassifier
from .patterns import (diffuseness, duplicate_token_score, head_pattern_scores, induction_score, local_score,
                       long_context_scores, previous_token_score)
from .probes import corpus, random_tokens, repeated_tokens, text_tokens
from .shapes import SHAPES, shape_labels, shape_scores, vertical_share
from .sinks import (dormant_by_query, dormant_heads, first_token_alpha, hidden_sinks, massive_activations, sink_metric,
                    value_drains)
from .table import DEFAULT_THRESHOLDS, LABELS, head_table, label_head

__all__ = [
    "DEFAULT_THRESHOLDS", "HeadClassifier", "LABELS", "corpus", "diffuseness", "dormant_by_query", "dormant_heads",
    "duplicate_token_score", "first_token_alpha", "head_pattern_scores", "head_table", "hidden_sinks", "induction_score",
    "label_head", "local_score", "long_context_scores", "massive_activations", "previous_token_score", "random_tokens",
    "repeated_tokens", "sink_metric", "text_tokens", "value_drains", "duo", "retrieval",
    "SHAPES", "shape_labels", "shape_scores", "vertical_share",
]
__all__ += ["circuits", "tasks"]
