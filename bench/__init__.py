"""bench: transfer-learning ablations, from the `bench` command or from Python (bench/api.py).

    import bench
    runs = bench.run("studies/demo.yaml", set={"train.epochs": 1})    # a DataFrame, a row per run
    bench.runs("results"); bench.effects("results", "demo"); bench.report("results")

Importing bench imports no torch, pandas or scikit-learn: each function imports what it needs.
"""

from bench.api import effects, run, runs

__all__ = ["run", "runs", "effects", "report"]


def __getattr__(name: str):
    # `bench.report` is the report package, callable as the API's report() (bench/report/__init__.py);
    # it is imported on first use, as it brings pandas and matplotlib
    if name == "report":
        import importlib

        return importlib.import_module("bench.report")
    raise AttributeError(f"module 'bench' has no attribute '{name}'")
