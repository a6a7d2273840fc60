"""Fine-tuning recipes: the optimizer's parameter groups, and when frozen stages start to train.

train.backbone_lr_mult    the backbone's learning rate relative to the head's (train.lr)
train.layer_decay         layer-wise learning-rate decay (BEiT, Bao et al. 2022; timm's param_groups_layer_decay):
                          the backbone's last layer learns at backbone_lr_mult * decay, each layer below it one
                          more factor of decay; layers are timm's fine groups (bench.models.layer_ids)
train.no_decay_norm_bias  no weight decay on parameters of one dimension (norm weights, biases) nor on the
                          model's no_weight_decay() names (a ViT's position embedding): timm's default rule
train.unfreeze_after      gradual unfreezing (ULMFiT, Howard & Ruder 2018): the head alone for this many epochs,
train.unfreeze_every      then one more backbone stage every this many epochs, from the last stage down, until
                          everything model.freeze leaves trainable trains

Every parameter that will ever train is in the optimizer from the first step, in its group. A stage that is
still frozen has no gradient, so the optimizers skip it (no moments, no weight decay) until it unfreezes; its
moments then start from zero, as any new parameter's do. Which stages train follows from the epoch alone, so a
resumed run unfreezes exactly as an uninterrupted one.
"""

from __future__ import annotations

from torch import nn

from bench import models
from bench.config import RunConfig, TrainConfig


def active(tc: TrainConfig) -> bool:
    """Whether any recipe changes the optimizer's groups (otherwise: one group of every parameter)."""
    return tc.backbone_lr_mult != 1 or tc.layer_decay is not None or tc.no_decay_norm_bias


def param_groups(net: nn.Module, tc: TrainConfig) -> list[dict]:
    """Optimizer groups of every trainable parameter of `net` (a Classifier, or a head trained alone on
    cached features), each {'name', 'params', 'lr', 'weight_decay'}: the head's first (history's lr is
    theirs), then the backbone's from its last layer down."""
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if not active(tc):
        return [{"name": "all", "params": [p for _, p in trainable], "lr": tc.lr, "weight_decay": tc.weight_decay}]
    backbone = getattr(net, "backbone", None)
    depth = models.layer_ids(backbone) if backbone is not None else {}
    top = max(depth.values(), default=0)
    no_decay = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()
    groups: dict[tuple, dict] = {}
    for name, p in trainable:
        inner = name.removeprefix("backbone.")
        in_backbone = backbone is not None and inner != name
        if not in_backbone:  # the head: one layer above the backbone's last, at train.lr
            layer, part, scale = top + 1, "head", 1.0
        elif tc.layer_decay:
            layer = depth.get(inner, top)
            part, scale = f"backbone.layer{layer}", tc.backbone_lr_mult * tc.layer_decay ** (top + 1 - layer)
        else:  # the whole backbone as one group
            layer, part, scale = top, "backbone", tc.backbone_lr_mult
        skip = tc.no_decay_norm_bias and (p.ndim <= 1 or (in_backbone and inner in no_decay))
        group = groups.setdefault(
            (-layer, skip),
            {
                "name": part + (".no_decay" if skip else ""),
                "params": [],
                "lr": tc.lr * scale,
                "weight_decay": 0.0 if skip else tc.weight_decay,
            },
        )
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def unfreeze(model: models.Classifier, cfg: RunConfig, epoch: int) -> list[str]:
    """Freeze, for `epoch` (from 1), what model.freeze and the gradual-unfreezing schedule keep frozen;
    returns the backbone stages that train in it, in forward order."""
    tc = cfg.train
    groups = models.stages(model.backbone)
    order = [s for s in groups if s != "tail"]
    always = set(models.frozen_stages(cfg.model.freeze, order, cfg.model.arch))
    units = [[s] for s in order if s not in always][::-1]  # the last stage first
    if units and "tail" in groups:
        units[0].append("tail")  # what follows the last stage (a final norm) opens with it
    opened = 0 if epoch <= tc.unfreeze_after else 1 + (epoch - tc.unfreeze_after - 1) // tc.unfreeze_every
    still = [s for unit in units[opened:] for s in unit]
    frozen = [p for s in (*always, *still) for p in groups[s]]
    model.set_frozen(models.whole_modules(model.backbone, set(frozen)), frozen)
    training = {s for unit in units[:opened] for s in unit}
    return [s for s in groups if s in training]
