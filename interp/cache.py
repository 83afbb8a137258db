"""ActivationCache: what `run_with_cache` returns, a dict of hook name -> tensor with a few helpers."""

from __future__ import annotations

import torch


class ActivationCache(dict):
    """Hook name -> captured tensor (detached). `cache.stack("hook_key_mean")` -> [layer, ...]."""

    def __init__(self, *args, n_layers: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_layers = n_layers
        self.why_missing: dict[str, str] = {}  # name -> why it holds nothing there (a grads cache: no gradient)

    def __getitem__(self, name):
        try:
            return super().__getitem__(name)
        except KeyError:
            if name in getattr(self, "why_missing", {}):
                raise KeyError(self.why_missing[name]) from None
            import difflib

            close = difflib.get_close_matches(str(name), list(self.keys()), n=3, cutoff=0.5)
            hint = f"; close: {close}" if close else ""
            raise KeyError(f"{name!r} was not captured{hint}. Captured: {len(self)} hook points") from None

    def layers_with(self, suffix: str) -> list[int]:
        return [l for l in range(self.n_layers) if f"blocks.{l}.attn.{suffix}" in self or f"blocks.{l}.{suffix}" in self]

    def layer_suffixes(self) -> list[str]:
        """What `stack` takes: the per-layer names captured (`hook_z`, `hook_query_entropy`, `hook_resid_post`...)."""
        found = {}
        for name in self:
            parts = str(name).split(".")
            if len(parts) >= 3 and parts[0] == "blocks":
                found[".".join(parts[3:] if parts[2] == "attn" else parts[2:])] = None
        return list(found)

    def stack(self, suffix: str) -> torch.Tensor:
        """Stack `blocks.{l}.attn.{suffix}` (or `blocks.{l}.{suffix}`) over the captured layers -> [layer, ...]."""
        layers = self.layers_with(suffix)
        if not layers:
            raise KeyError(self._stack_error(suffix))
        out = []
        for l in layers:
            key = f"blocks.{l}.attn.{suffix}" if f"blocks.{l}.attn.{suffix}" in self else f"blocks.{l}.{suffix}"
            out.append(self[key])
        return torch.stack(out)

    def _stack_error(self, suffix) -> str:
        """`stack`'s KeyError message: what was captured per layer, with the closest names (a suffix of one, e.g.
        'entropy' for 'hook_query_entropy', or a near spelling)."""
        import difflib

        known = self.layer_suffixes()
        within = [k for k in known if isinstance(suffix, str) and suffix and k.endswith(suffix)]
        close = within or difflib.get_close_matches(str(suffix), known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close[:3])}?" if close else ""
        return f"no layer captured {suffix!r}{hint} (captured per layer: {known or 'nothing'})"

    def __repr__(self, max_rows: int = 40) -> str:
        """Terminal display: a short summary, not every tensor. Per-layer names are grouped
        (`blocks.{0-29}.attn.hook_z  30 x [1, 9, 9, 64] float32`); `dict(cache)` shows the tensors."""
        import re

        groups: dict[tuple, list] = {}  # (name with the layer as {}, shape, dtype, device) -> layers
        total = 0
        for name, v in self.items():
            m = re.match(r"blocks\.(\d+)\.(.*)$", str(name))
            template, layer = (f"blocks.{{}}.{m.group(2)}", int(m.group(1))) if m else (str(name), None)
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
                key = (template, "[" + ", ".join(map(str, v.shape)) + "]", str(v.dtype).removeprefix("torch."),
                       str(v.device))
            else:
                key = (template, "", type(v).__name__, "")
            groups.setdefault(key, []).append(layer)
        lines = []
        for (template, shape, dtype, device), layers in groups.items():
            if layers == [None]:
                name, count = template, ""
            else:
                ls = sorted(l for l in layers if l is not None)
                span = (f"{ls[0]}-{ls[-1]}" if len(ls) > 1 and ls == list(range(ls[0], ls[-1] + 1))
                        else ",".join(map(str, ls)))
                name = template.format("{" + span + "}" if len(ls) > 1 else span)
                count = f"{len(ls)} x " if len(ls) > 1 else ""
            lines.append((name, f"{count}{shape} {dtype}" + (f" {device}" if device and device != "cpu" else "")))
        width = max((len(n) for n, _ in lines[:max_rows]), default=0)
        body = [f"  {n:<{width}}  {d}" for n, d in lines[:max_rows]]
        if len(lines) > max_rows:
            body.append(f"  ... {len(lines) - max_rows} more groups")
        kind = "gradients" if hasattr(self, "metric") else "hook points"
        mib = total / 2**20
        head = f"ActivationCache: {len(self)} {kind}, {mib:.1f} MiB" if mib >= 0.1 else \
            f"ActivationCache: {len(self)} {kind}, {total / 1024:.1f} KiB"
        if getattr(self, "metric", None) is not None:
            head += f", metric {self.metric:.4g}"
        missing = getattr(self, "why_missing", {})
        if missing:
            body.append(f"  ({len(missing)} hook point(s) with no gradient: {', '.join(list(missing)[:3])}"
                        f"{', ...' if len(missing) > 3 else ''})")
        return "\n".join([head] + body) if body else head + " (empty)"

    __str__ = __repr__

    def _repr_html_(self, max_rows: int = 200) -> str:
        """Jupyter display: a summary table of the captured hook points (name, shape, dtype, device, size)."""
        import html

        def size(n: float) -> str:
            for unit in ("B", "KiB", "MiB", "GiB"):
                if n < 1024 or unit == "GiB":
                    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
                n /= 1024

        rows, total = [], 0
        for name, v in self.items():
            if isinstance(v, torch.Tensor):
                nbytes = v.numel() * v.element_size()
                total += nbytes
                cells = (name, "[" + ", ".join(map(str, v.shape)) + "]", str(v.dtype).removeprefix("torch."),
                         str(v.device), size(nbytes))
            else:
                cells = (name, "", type(v).__name__, "", "")
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        more = len(rows) - max_rows
        if more > 0:
            rows = rows[:max_rows] + [f"<tr><td colspan='5'>… {more} more</td></tr>"]
        style = "style='border-collapse:collapse;font-size:12px;font-family:monospace'"
        return (f"<div><b>ActivationCache</b>: {len(self)} hook points, {size(total)} in all"
                f"<table {style}><thead><tr><th>name</th><th>shape</th><th>dtype</th><th>device</th><th>size</th>"
                f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
