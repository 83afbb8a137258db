"""The `interp` command line.

    interp classify MODEL [MODEL ...] --out DIR [--context N] [--prompts N] [--device cpu|cuda] [--dtype D]
                    [--resume] [--ray ADDRESS]
    interp report DIR
    interp models

Bad input prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit 2
        print(f"interp: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _fail(msg: str):
    print(f"interp: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _check_model_arg(m: str) -> None:
    from .toy import TOYS
    from .zoo import BUNDLED

    if m in BUNDLED or m in TOYS:
        return
    p = Path(m).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            _fail(f"{m} is a directory without config.json (a Hugging Face folder needs config.json, weights and "
                  "tokenizer files)")
        return
    if p.is_file():
        if p.suffix != ".gguf":
            _fail(f"{m} is not a .gguf file or a model folder")
        return
    if "/" in m or m.startswith((".", "~")) or m.endswith(".gguf"):
        _fail(f"no such file or directory: {m}")
    _fail(f"unknown model {m!r}; available: {', '.join(sorted(set(BUNDLED) | set(TOYS)))} "
          "(or a local folder / .gguf file)")


def _check_out(out: str) -> Path:
    p = Path(out)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _fail(f"cannot create --out {out}: {e.strerror}")
    if not os.access(p, os.W_OK):
        _fail(f"--out {out} is not writable")
    return p


def main(argv=None) -> int:
    parser = _Parser(prog="interp", description="Mechanistic interpretability for attention heads.")
    sub = parser.add_subparsers(dest="cmd", parser_class=_Parser)
    c = sub.add_parser("classify", help="score and label every head of one or more models")
    c.add_argument("models", nargs="+", metavar="MODEL")
    c.add_argument("--out", required=True)
    c.add_argument("--context", type=int, default=None, help="tokens of natural text (default min(1024, max))")
    c.add_argument("--prompts", type=int, default=4)
    c.add_argument("--device", choices=["cpu", "cuda"], default=None)
    c.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    c.add_argument("--resume", action="store_true", help="reuse finished shards in DIR")
    c.add_argument("--ray", default=None, metavar="ADDRESS", help="run shards as Ray tasks ('auto' or host:port)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--no-progress", action="store_true")
    r = sub.add_parser("report", help="(re)write DIR/report.html from DIR/heads.csv")
    r.add_argument("dir")
    sub.add_parser("models", help="list the bundled and toy models")
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help()
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cmd == "models":
        from .zoo import available

        for name, desc in available().items():
            print(f"{name:22s} {desc}")
        return 0
    if args.cmd == "report":
        from .report import report_from_dir

        try:
            print(report_from_dir(args.dir))
        except ValueError as e:
            _fail(str(e))
        return 0
    for m in args.models:
        _check_model_arg(m)
    if args.context is not None and args.context < 8:
        _fail(f"--context must be at least 8, got {args.context}")
    if args.prompts < 1:
        _fail(f"--prompts must be at least 1, got {args.prompts}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            _fail("--device cuda asked for, but no CUDA device is available")
    out = _check_out(args.out)
    from .classify import classify

    try:
        classify(args.models, out, context=args.context, prompts=args.prompts, device=args.device,
                 dtype=args.dtype, resume=args.resume, seed=args.seed, progress=not args.no_progress,
                 ray_address=args.ray)
    except ValueError as e:
        _fail(str(e).splitlines()[0])
    print(f"wrote {out / 'heads.csv'} and {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
