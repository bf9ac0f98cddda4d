"""How fast each job starts: ``python jobs/<job>.py --help``, and whether it loads TensorFlow.

    python benchmarks/startup.py                    # this checkout
    python benchmarks/startup.py --rev 6745011      # another revision too, side by side

Each job's ``--help`` runs ``--repeat`` times in a fresh interpreter; the table gives the median
wall time and whether ``tensorflow`` was among the imports (``-X importtime``). ``--rev`` checks
the revision out into a temporary git worktree and runs its jobs with its own ``interest``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, table


def measure(tree: Path, job: str, repeat: int) -> tuple[float, bool]:
    """(median seconds, loads TensorFlow) of ``jobs/<job>.py --help`` in ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}  # that tree's interest, not the installed one
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        subprocess.run([sys.executable, f"jobs/{job}.py", "--help"], cwd=tree, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - tic)
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", f"jobs/{job}.py", "--help"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    loads_tf = any(ln.rsplit("|", 1)[-1].strip() == "tensorflow" for ln in probe.stderr.splitlines())
    return statistics.median(times), loads_tf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=None, help="also measure this git revision (e.g. the one before a change)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    trees = {"this checkout": ROOT}
    with tempfile.TemporaryDirectory(prefix="interest-startup-") as tmp:
        if args.rev:
            subprocess.run(
                ["git", "worktree", "add", "--detach", tmp, args.rev], cwd=ROOT, check=True, capture_output=True
            )
            trees = {args.rev: Path(tmp), **trees}
        try:
            jobs = sorted(p.stem for p in (ROOT / "jobs").glob("*.py"))
            rows = []
            for job in jobs:
                row: dict[str, object] = {"job": job}
                for name, tree in trees.items():
                    if not (tree / "jobs" / f"{job}.py").exists():
                        row[f"{name} s"], row[f"{name} TF"] = "–", "–"
                        continue
                    seconds, tf = measure(tree, job, args.repeat)
                    row[f"{name} s"], row[f"{name} TF"] = f"{seconds:.2f}", "yes" if tf else "no"
                rows.append(row)
        finally:
            if args.rev:
                subprocess.run(["git", "worktree", "remove", "--force", tmp], cwd=ROOT, capture_output=True)
    print(f"machine: {machine()}; median of {args.repeat} runs of `python jobs/<job>.py --help`\n")
    headers = list(rows[0])
    print(table(headers, [[r[h] for h in headers] for r in rows]))


if __name__ == "__main__":
    main()
