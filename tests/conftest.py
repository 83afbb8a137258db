import os
import warnings

import pytest
import torch

# Without a GPU the Triton kernels run in the CPU interpreter; this must be set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message="invalid value encountered", category=RuntimeWarning)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def smollm2():
    import interp

    return interp.load("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3():
    import interp

    return interp.load("gemma3-270m")


def eager_run(model, input_ids, attention_mask=None):
    """The wrapped model's own transformers forward with eager attention (patterns included), then restored."""
    hf = model.model
    hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = hf(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    finally:
        hf.set_attn_implementation("interp")
    return out
