"""First-run cost, measured side by side in one run: `bench run studies/first-run-cpu.yaml` as a new user runs it
(a new process, an empty cache and results store), again with only the decoded images cached, and a
straightforward notebook implementation of the same recipe (scripts/notebook_baseline.py) on the same machine.
Whole-process wall times and their ratios; the CPU model beside them.

    BENCH_DATA=../shared/data python scripts/first_run_benchmark.py [--out reports/first-run]

The notebook reads an extracted copy of the images (extracted before its clock starts: its most favourable case);
bench reads the .tar.gz itself. Both use every core torch uses by default.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "first-run-cpu.yaml"


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "", file=sys.stderr)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, help="also write first-run.md here")
    args = ap.parse_args()
    archive = Path(os.path.expandvars("$BENCH_DATA/cifar10-jpeg.tar.gz"))
    if not archive.is_file():
        sys.exit(f"no {archive}: export BENCH_DATA=the folder holding cifar10-jpeg.tar.gz")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench = [sys.executable, "-m", "bench", "run", str(STUDY)]
        env = {**os.environ, "BENCH_CACHE": str(tmp / "cache")}
        rows.append(("bench run, empty cache", timed([*bench, "--results", str(tmp / "r1")], env)))
        shutil.rmtree(tmp / "cache" / "features")  # the decoded images stay, the features go
        rows.append(("bench run, decoded images cached", timed([*bench, "--results", str(tmp / "r2")], env)))
        t0 = time.perf_counter()
        with tarfile.open(archive) as tar:
            tar.extractall(tmp / "images", filter="data")
        extract = time.perf_counter() - t0
        folder = next(p for p in (tmp / "images").iterdir() if p.is_dir())
        notebook = [sys.executable, str(ROOT / "scripts" / "notebook_baseline.py"), str(folder)]
        rows.append(("notebook implementation (images extracted)", timed(notebook, dict(os.environ))))
    import torch

    from bench.infra.hashing import cpu_info
    from bench.report.describe import made_of
    from bench.study import load_study_file, select

    ref = rows[2][1]
    lines = [
        f"CPU: {cpu_info()[0]} ({os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads). "
        f"Study: {STUDY.relative_to(ROOT)}. Command: `python scripts/first_run_benchmark.py`",
        "",
        made_of([v.config for v in select(load_study_file(STUDY), None)])
        + " 2,000 training, 500 validation and 500 test images at 64 px, 5 epochs.",
        "",
        "| what | whole process, s | notebook / this |",
        "| --- | --- | --- |",
        *(f"| {what} | {s:.1f} | {ref / s:.2f}x |" for what, s in rows),
        "",
        f"Extracting the archive for the notebook took {extract:.1f} s more (not counted above).",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "first-run.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
