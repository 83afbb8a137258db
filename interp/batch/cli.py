"""The `interp` command line.

    interp classify MODEL [MODEL ...] --out DIR [--context N] [--prompts N] [--seed N] [--device cpu|cuda]
                    [--dtype D] [--resume [--recompute-mismatched]] [--ray ADDRESS [--ray-timeout S]] [--no-progress]
    interp importance MODEL [MODEL ...] --task TASK --out DIR [--methods ...] [job options as above]
    interp circuit MODEL [MODEL ...] --task TASK --method METHOD --out DIR [--top-n N] [--eval-ablations ...]
    interp report DIR
    interp models

Every batch job (see COMMANDS) gets the same options for models, output, device, resume and Ray. Bad input prints
one line and exits with status 2, leaving no output files; Ctrl-C prints one line and exits with status 130
(finished shards stay, for --resume).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

COMMANDS = ("classify", "importance", "circuit")  # batch jobs: modules interp/batch/<name>.py that register a Job


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit 2
        print(f"interp: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _fail(msg: str):
    print(f"interp: error: {str(msg).strip().splitlines()[0] if str(msg).strip() else msg}", file=sys.stderr)
    raise SystemExit(2)


def _check_out(out: str) -> Path:
    """--out made and checked writable (the same check as the Python entry points': arguments.check_out)."""
    from .arguments import check_out

    try:
        return check_out(out, "--out")
    except (ValueError, TypeError) as e:
        _fail(e)


def _add_job_parser(sub, job) -> None:
    c = sub.add_parser(job.name, help=job.help)
    c.add_argument("models", nargs="+", metavar="MODEL",
                   help="bundled or toy name, Hugging Face folder, .gguf file, or hub id org/name (with network)")
    c.add_argument("--out", required=True, metavar="DIR")
    if job.add_arguments is not None:
        job.add_arguments(c)
    c.add_argument("--device", choices=["cpu", "cuda"], default=None)
    c.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    c.add_argument("--resume", action="store_true", help="reuse finished shards in DIR made with the same options")
    c.add_argument("--recompute-mismatched", action="store_true",
                   help="with --resume: recompute shards made with other options or another model (else refused)")
    c.add_argument("--ray", default=None, metavar="ADDRESS", help="run shards as Ray tasks: local, auto or host:port")
    c.add_argument("--ray-timeout", type=float, default=20.0, metavar="S",
                   help="seconds to wait for a Ray cluster to answer (default 20)")
    c.add_argument("--no-progress", action="store_true")


def _quiet_libraries() -> None:
    """Our shard progress is the progress: no weight-loading bars or library warnings on stderr, where an error
    must be the only line."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _start_line(job, args, options: dict) -> str:
    """The first progress line, printed before any model is loaded: what runs and how progress is reported."""
    models = list(dict.fromkeys(args.models))
    shards = sum(len(job.shards(m, options)) for m in models)
    return (f"interp {job.name}: {len(models)} model(s), {shards} shard(s) into {args.out}; a line as each "
            f"shard finishes, and while a long one runs{' (finished shards are reused)' if args.resume else ''}")


def _run_job(job, args) -> int:
    from ..zoo import resolve
    from .checks import check_timeout
    from .runner import run_job

    try:
        options = job.options_from_args(args) if job.options_from_args is not None else {}
        for m in args.models:
            resolve(m)  # every name checked before anything is loaded
        check_timeout(args.ray_timeout, "--ray-timeout")  # NaN, inf, <= 0 refused; 1e10 waits as long as it may
        if args.recompute_mismatched and not args.resume:
            raise ValueError("--recompute-mismatched only makes sense with --resume")
    except (ValueError, TypeError) as e:
        _fail(e)
    if args.device == "cuda" and args.ray is None:  # with --ray the cluster's GPUs count (checked there)
        import torch

        if not torch.cuda.is_available():
            _fail("--device cuda asked for, but no CUDA device is available")
    out = _check_out(args.out)
    _quiet_libraries()
    if not args.no_progress:  # early: a large model or a long shard may take minutes before its first line
        print(_start_line(job, args, options), flush=True)
    try:
        run_job(job, args.models, out, options, device=args.device, dtype=args.dtype, resume=args.resume,
                recompute_mismatched=args.recompute_mismatched, ray_address=args.ray, ray_timeout=args.ray_timeout,
                progress=not args.no_progress)
    except (ValueError, TypeError) as e:
        _fail(e)
    except OSError as e:  # a full disk, a folder made read-only meanwhile: the OS's sentence, not a traceback
        _fail(f"{e.strerror or e}{f': {e.filename}' if getattr(e, 'filename', None) else ''}")
    except KeyboardInterrupt:
        print(f"interp: interrupted; finished shards are kept in {out / 'shards'} (rerun with --resume to "
              "continue)", file=sys.stderr)
        return 130
    written = [str(out / f) for f in job.outputs if (out / f).exists()]
    print(f"wrote {', '.join(written)}")
    return 0


def _report(directory: str) -> int:
    from ..report import report_from_dir

    try:
        print(report_from_dir(directory))  # reads and checks heads.csv, naming the file, column and row
    except (ValueError, TypeError, KeyError) as e:
        _fail(e)
    except OSError as e:  # a folder without read or write permission: the OS's sentence, not a traceback
        _fail(f"{e.strerror or e}{f': {e.filename}' if getattr(e, 'filename', None) else ''}")
    return 0


def main(argv=None) -> int:
    from .runner import get_job

    parser = _Parser(prog="interp", description="Mechanistic interpretability for attention heads.")
    sub = parser.add_subparsers(dest="cmd", parser_class=_Parser)
    jobs = {name: get_job(name) for name in COMMANDS}
    for job in jobs.values():
        _add_job_parser(sub, job)
    r = sub.add_parser("report", help="(re)write DIR/report.html from DIR/heads.csv")
    r.add_argument("dir")
    m = sub.add_parser("models", help="list the bundled and toy models")
    m.add_argument("--where", action="store_true", help="also where each bundled model's weights are read from")
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help()
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if args.cmd == "models":
            from ..zoo import BUNDLED, available, weights_source

            for name, desc in available().items():
                print(f"{name:22s} {desc}")
                if args.where and name in BUNDLED:
                    print(f"{'':22s} weights: {weights_source(name)}")
            return 0
        if args.cmd == "report":
            return _report(args.dir)
        return _run_job(jobs[args.cmd], args)
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `interp models | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
