"""Run many `interp` command lines fast: one Python process imports torch, transformers and the CLI once, then forks
a child per command line. Each child has its own environment, stdout, stderr and exit status, exactly as
`python -m interp.cli ARGS` would (the same `main`), without paying ~5 s of imports per case on a busy CPU.

    python tests/cli_fork.py CASES.json RESULTS.json
    CASES.json: [{"args": [...], "env": {...}, "timeout": seconds}, ...]
    RESULTS.json: [{"returncode": int, "stdout": str, "stderr": str, "seconds": float}, ...]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback


def _child(args, env, out_path, err_path) -> None:
    code = 1
    try:
        for fd, path in ((1, out_path), (2, err_path)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
            os.close(f)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from interp.batch.cli import main

        code = main(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_all(cases: list[dict]) -> list[dict]:
    # the heavy imports, once, before forking (imports only: no torch op runs here, so no thread pool exists
    # that a forked child could inherit in a locked state)
    import importlib

    for module in ("interp.batch.classify", "interp.batch.cli", "interp.analyses", "interp.analyses.retrieval",
                   "transformers.models.llama.modeling_llama", "transformers.models.auto.tokenization_auto",
                   "transformers.modeling_gguf_pytorch_utils", "gguf", "safetensors.torch", "pandas", "tqdm.auto"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases):
            out_path, err_path = f"{tmp}/{i}.out", f"{tmp}/{i}.err"
            t0 = time.time()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(case["args"], case.get("env", {}), out_path, err_path)
            deadline = t0 + case.get("timeout", 120)
            status = None
            while status is None:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
                elif time.time() > deadline:
                    os.kill(pid, 9)
                    status = os.waitpid(pid, 0)[1]
                    break
                else:
                    time.sleep(0.02)
            rc = os.waitstatus_to_exitcode(status)
            read = lambda p: open(p, errors="replace").read() if os.path.exists(p) else ""  # noqa: E731
            results.append(dict(returncode=rc, stdout=read(out_path), stderr=read(err_path),
                                seconds=round(time.time() - t0, 2)))
    return results


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    with open(sys.argv[2], "w") as f:
        json.dump(run_all(cases), f)
