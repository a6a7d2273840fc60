"""Which pretrained weights the libraries have and where their files lie, without importing the libraries
(seconds each): torchvision's weight enums (name, tags, URLs) per ResNet and timm's pretrained tags (with their
Hugging Face repositories) per model, read from the library once per library version
(hashing.library_fact). `bench list` validates and
fingerprints a study with them, and imports no torch when they and the FLOP counts are remembered."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from bench.infra.hashing import library_fact


class WeightsError(Exception):
    """Pretrained weights that cannot be had: which file, where the cache looks, how to pass one."""


def torchvision_weights(arch: str) -> dict:
    """{'enum': 'ResNet50_Weights', 'urls': {'IMAGENET1K_V1': url, ...}} of a torchvision model (DEFAULT left
    out: it is an alias)."""

    def read() -> dict:
        import torchvision

        enum = torchvision.models.get_model_weights(arch)
        return {"enum": enum.__name__, "urls": {t: enum[t].url for t in enum.__members__ if t != "DEFAULT"}}

    return library_fact("torchvision", f"weights {arch}", read)


def timm_tags(model: str) -> dict:
    """{'default': the Hugging Face repository of `model`'s default weights (None without any), 'tags': {each
    pretrained tag ('resnet50.a1_in1k'): its repository}} from timm."""

    def read() -> dict:
        import timm

        def repo(name: str) -> str | None:
            cfg = timm.models.get_pretrained_cfg(name)
            return None if cfg is None else getattr(cfg, "hf_hub_id", None) or f"timm/{name}"

        return {"default": repo(model), "tags": {t: repo(t) for t in timm.list_pretrained(f"{model}.*")}}

    return library_fact("timm", f"pretrained {model}", read)


def hub_dir() -> Path:
    """torch.hub's folder: torch's own answer once torch is imported (it may have been set_dir'ed), else the
    same rule torch applies ($TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub)."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def hub_file(url: str) -> Path:
    """Where torch.hub looks for (and downloads) a checkpoint URL."""
    return hub_dir() / "checkpoints" / os.path.basename(urlparse(url).path)


def weights_file(model) -> Path | None:
    """The file a model's weights (a config.ModelConfig's) load from (it may not exist yet); None for random
    init, or for timm weights not in the Hugging Face cache."""
    kind, tag = model.weights_spec.kind, model.weights_spec.tag
    if kind == "file":
        return Path(tag)
    if kind == "torchvision":
        return hub_file(torchvision_weights(model.arch)["urls"][tag])
    if kind == "timm":
        from huggingface_hub import try_to_load_from_cache

        name, dot, _ = tag.partition(".")
        known = timm_tags(name)
        hub_id = known["tags"].get(tag) if dot else known["default"]
        if hub_id is None:
            return None
        for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, name)
            if isinstance(found, str):
                return Path(found)
    return None
