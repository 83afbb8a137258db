"""Each registered task on one model: clean metric, corrupt metric, accuracy (clean and corrupt prompts).

    python examples/task_probe.py --model smollm2-135m --n 100
    python examples/task_probe.py --model toy-induction --tasks induction
    python examples/task_probe.py --model gemma3-270m --file rows.jsonl      # adds a row for your own task file
"""

import argparse
import sys
import time

import interp
from interp.analyses import tasks as T


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=32, help="prompts per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", default=",".join(T.DEFAULT_REPORT_TASKS),
                   help=f"comma-separated, from {', '.join(T.DEFAULT_REPORT_TASKS)}")
    p.add_argument("--file", default=None, help="a JSONL / CSV task file to add (see interp.analyses.tasks.from_file)")
    p.add_argument("--notes", action="store_true", help="print each task's notes")
    args = p.parse_args()
    names = [x.strip() for x in args.tasks.split(",") if x.strip()]
    try:
        tasks = [T.get_task(x) for x in names]
        if args.file:
            tasks.append(T.get_task("file", path=args.file))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    t = time.time()
    model = interp.load(args.model)
    table = T.task_report(model, tasks=tasks, n=args.n, seed=args.seed)
    cols = ["task", "metric", "higher_is_better", "n", "clean", "corrupt", "accuracy", "corrupt_accuracy"]
    print(f"{model.name} (n={args.n}, seed={args.seed})")
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.notes:
        for _, row in table.iterrows():
            print(f"- {row.task}: {row.notes}")
    print(f"({time.time() - t:.0f}s)")


if __name__ == "__main__":
    main()
