"""A study's image folders read and decoded in another process while `bench run` imports torch.

Importing torch and torchvision takes ~3.5 s of one core (torchvision imports torch's compiler); listing a
60,000-image .tar.gz, importing scikit-learn for the split and decoding the images a study uses take ~2.5 s more,
and none of it needs torch. So `bench run` starts `python -m bench.data.background` on the study's image-folder
sources first (start), and data.load waits for it (wait) before it reads them itself: it then finds the listing
and the decoded images in the cache (keyed by the images' content, as always) and reads nothing twice.

The other process only fills caches that are written atomically and trusted by their keys, so whatever it does
or fails to do changes no result: a failure is found again, and reported, by data.load in this process. It is
stopped when this process exits.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys

from bench.config import DataConfig

_running: dict[DataConfig, subprocess.Popen] = {}


def start(configs: list[DataConfig]) -> None:
    """Read and decode the image folders among `configs` in one process in the background."""
    todo = [c for c in dict.fromkeys(configs) if c.source == "folder" and c not in _running]
    if not todo:
        return
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.data.background", json.dumps([c.model_dump(mode="json") for c in todo])],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(_stop, process)
    _running.update(dict.fromkeys(todo, process))


def wait(cfg: DataConfig) -> None:
    """Until the background process reading `cfg`'s images (if any) has ended."""
    if (process := _running.pop(cfg, None)) is not None:
        process.wait()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()  # its writes are atomic: a kill leaves no half-written cache
        process.wait()


def main(argv: list[str]) -> int:
    from bench.data import prepare

    for spec in json.loads(argv[0]):
        try:
            prepare(DataConfig(**spec))
        except Exception:  # noqa: BLE001  data.load in the process that started this one meets it and says why
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
