"""Host time per call spent inside chosen functions, measured in place (used by host_split_gpu.py and
model_overhead_gpu.py).

`timed_sections(fn, targets, reps)` wraps each target `(owner, attribute)` (a module function, a class's method, a
module global that another module calls by name) in a timer for the duration of the measurement, runs fn `reps`
times back to back, and returns host microseconds per fn call: fn's whole time under "whole call" and the
time inside each target, labelled `Owner.attribute`. Nested targets each count their own inclusive time, so a
caller's row includes its callees' rows. Each wrapper costs ~0.3 us per call it times.
"""

from __future__ import annotations

import time


def timed_sections(fn, targets, reps: int, *, sync=None, before=None) -> dict:
    """See the module doc. `sync()`: called after the warm-up and after the timed calls (e.g.
    torch.cuda.synchronize); `before()`: called just before the timed calls (e.g. a long sleep kernel, so that the
    device never catches up with the host during them)."""
    spent: dict = {}

    def timed(label, f):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
        return wrapper

    saved = []
    for owner, name in targets:
        label = f"{getattr(owner, '__name__', type(owner).__name__).rsplit('.', 1)[-1]}.{name}"
        saved.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name), label))
    try:
        for owner, name, f, label in saved:
            setattr(owner, name, timed(label, f))
        for _ in range(min(reps, 20)):
            fn()
        if sync is not None:
            sync()
        spent.clear()
        if before is not None:
            before()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        total = time.perf_counter() - t
        if sync is not None:
            sync()
    finally:
        for owner, name, f, _ in saved:
            setattr(owner, name, f)
    out = {"whole call": total}
    out.update(spent)
    return {label: sec / reps * 1e6 for label, sec in out.items()}
