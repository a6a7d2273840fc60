"""What the light commands import: `bench --help`, `--version`, `<cmd> --help` and parse errors answer
without torch (seconds to import), and `import bench` stays light. A test of imports, not of time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "timm", "sklearn", "pandas", "matplotlib", "scipy")

# Runs `python -m bench.cli ARGS` in this interpreter and writes the names of the modules it imported,
# whatever way it exits (argparse exits with SystemExit for --help, --version and parse errors).
PROBE = """
import atexit, json, runpy, sys
out, code = sys.argv[1:3]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
if code.startswith("-m "):
    sys.argv = ["bench", *json.loads(code[3:])]
    runpy.run_module("bench.cli", run_name="__main__")
else:
    exec(code)
"""


def imported(tmp_path, code: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level packages and the bench modules that `code` imported, and how it ended."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    names = json.loads(out.read_text())
    return {m.split(".")[0] for m in names} | {m for m in names if m.startswith("bench.")}, done


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["list", "--help"], ["run", "--help"], ["report", "--help"], ["run", "--no-such"], []],
)
def test_light_commands_import_no_torch(tmp_path, args):
    modules, done = imported(tmp_path, "-m " + json.dumps(args))
    assert done.returncode in (0, 2), done.stderr
    assert "bench" in modules  # the probe did run bench
    assert not modules & set(HEAVY), f"bench {' '.join(args)} imported {sorted(modules & set(HEAVY))}"
    if args == ["--version"]:
        assert done.stdout.startswith("bench ") and "torch " in done.stdout
    elif done.returncode == 2:
        assert "usage: bench" in done.stderr  # the parse error is argparse's, with the usage line


def test_import_bench_is_light_and_lists_its_api(tmp_path):
    modules, done = imported(tmp_path, "import bench; print(sorted(bench.__all__)); bench.run; bench.effects")
    assert done.returncode == 0, done.stderr
    assert not modules & set(HEAVY), f"import bench imported {sorted(modules & set(HEAVY))}"
    assert "'effects', 'report', 'run', 'runs'" in done.stdout


def test_the_report_side_imports_no_training_library(tmp_path):
    """Reading and reporting stored runs needs pandas and matplotlib, never torch: every report module loads."""
    code = "import pkgutil, bench.report as r\n"
    code += "for m in pkgutil.walk_packages(r.__path__, 'bench.report.'): __import__(m.name)"
    modules, done = imported(tmp_path, code)
    assert done.returncode == 0, done.stderr
    assert "bench.report.describe" in modules and "bench.report.build" in modules  # the probe did load them
    training = {"torch", "torchvision", "timm", "sklearn"}
    assert not modules & training, f"bench.report imported {sorted(modules & training)}"


def test_python_dash_m_bench_is_the_cli():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith("usage: bench"), done.stderr


def test_listing_a_study_reads_no_report_or_training_modules(tmp_path):
    """`bench list` needs the config, the store and the cost model, not the report, the trainer or a tracker."""
    modules, done = imported(
        tmp_path, "-m " + json.dumps(["list", "studies/demo.yaml", "--results", str(tmp_path / "r")])
    )
    assert done.returncode == 0, done.stderr
    from bench.study import load_study_file

    assert f"demo: {len(load_study_file(ROOT / 'studies' / 'demo.yaml').variants)} runs" in done.stdout
    unneeded = {
        "matplotlib",
        "bench.report",
        "bench.infra.runner",
        "bench.training.loop",
        "bench.infra.launch",
        "bench.infra.trackers",
    }
    assert not modules & unneeded, sorted(modules & unneeded)


def test_listing_again_imports_no_torch_and_shows_the_same(tmp_path, monkeypatch):
    """The first `bench list` reads the libraries' weight tables, published checksums and FLOP counts (torch,
    torchvision, timm); they are remembered per library version, so listing again imports none of them."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    args = "-m " + json.dumps(["list", "ablations.yaml", "--results", str(tmp_path / "r")])
    _, first = imported(tmp_path, args)
    modules, again = imported(tmp_path, args)
    assert first.returncode == again.returncode == 0, again.stderr
    assert "resnet50-cifar10: " in again.stdout and again.stdout == first.stdout  # the same ids, costs and states
    training = {"torch", "torchvision", "timm"}
    assert not modules & training, f"bench list imported {sorted(modules & training)} the second time"
