"""interp: mechanistic interpretability for attention heads.

    import interp
    model = interp.load("smollm2-135m")            # offline, from a PyPI package
    logits, cache = model.run_with_cache("Hello", stats=["key_mean", "entropy"])
"""

__version__ = "0.1.0"

from .cache import ActivationCache
from .hooks import HookPoint
from .head_mask import HeadMask
from .interventions import GatedStreaming, HeadAblation, KeyMask, ScaleAttention, StreamingAttention
from .stages import STAGES, AttnCall, Intervention
from .model import HookedModel
from .tl import TLPatternModel
from .zoo import available, load
from . import toy

__all__ = ["ActivationCache", "AttnCall", "GatedStreaming", "HeadAblation", "HeadMask", "HookPoint", "HookedModel",
           "Intervention", "KeyMask", "STAGES", "ScaleAttention", "StreamingAttention", "TLPatternModel", "available",
           "load", "toy"]
