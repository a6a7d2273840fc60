"""Fine-tuning recipes (bench.training.recipes): the learning rate every parameter group gets at every step, and which
parameters train in which epoch under gradual unfreezing, resumed or not."""

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from bench import data, models
from bench.config import RunConfig
from bench.training import loop as train
from bench.training import recipes
from tests.helpers import TINY

CPU = torch.device("cpu")


def config(model: dict, **train_settings) -> RunConfig:
    return RunConfig.model_validate(
        {
            **TINY,
            "model": {**TINY["model"], "arch": "resnet18", **model},
            "train": {**TINY["train"], **train_settings},
        }
    )


@pytest.fixture
def steps():
    """Every optimizer step's groups, as the optimizer holds them right before stepping."""
    seen = []

    def hook(opt, args, kwargs):
        seen.append({g["name"]: (g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups})

    handle = register_optimizer_step_pre_hook(hook)
    yield seen
    handle.remove()


def test_each_group_gets_its_layer_wise_rate_at_every_step(steps):
    cfg = config(
        {"freeze": "none"},
        optimizer="adamw",
        lr=0.01,
        weight_decay=0.05,
        schedule="cosine",
        warmup_epochs=1,
        backbone_lr_mult=0.1,
        layer_decay=0.5,
        no_decay_norm_bias=True,
    )
    ds = data.load(cfg.data)
    train.fit(cfg, ds, CPU, feature_cache=False)
    per_epoch = 4  # 120 training images in batches of 32
    assert len(steps) == cfg.train.epochs * per_epoch
    # ResNet-18 by timm's fine groups: the stem is layer 0, its eight residual blocks layers 1..8
    top = 8
    for step, groups in enumerate(steps):
        factor = train.lr_factor(cfg.train, step, per_epoch)
        assert groups["head"][:2] == pytest.approx((0.01 * factor, 0.05))
        assert groups["head.no_decay"][:2] == pytest.approx((0.01 * factor, 0.0))
        for layer in range(top + 1):
            rate = 0.01 * factor * 0.1 * 0.5 ** (top + 1 - layer)
            assert groups[f"backbone.layer{layer}"][:2] == pytest.approx((rate, 0.05)), (step, layer)
            assert groups[f"backbone.layer{layer}.no_decay"][:2] == pytest.approx((rate, 0.0)), (step, layer)
    assert list(steps[0])[:2] == ["head", "head.no_decay"]  # history's lr is the head's


def test_groups_cover_every_parameter_once_and_follow_timms_rules():
    cfg = config(
        {"arch": "timm:test_vit", "freeze": "none"}, weight_decay=0.1, layer_decay=0.8, no_decay_norm_bias=True
    )
    model = models.build_model(cfg.model, 10)
    groups = recipes.param_groups(model, cfg.train)
    names = {id(p): n for n, p in model.named_parameters()}
    where = {names[id(p)]: g for g in groups for p in g["params"]}
    assert sorted(where) == sorted(names.values())  # each parameter in exactly one group
    assert sum(len(g["params"]) for g in groups) == len(names)
    assert where["backbone.pos_embed"]["weight_decay"] == 0 and where["backbone.cls_token"]["weight_decay"] == 0
    assert where["backbone.blocks.0.norm1.weight"]["weight_decay"] == 0  # one dimension: no decay
    assert where["backbone.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.1
    depth = models.layer_ids(model.backbone)
    top = max(depth.values())
    assert where["backbone.blocks.0.attn.qkv.weight"]["lr"] == pytest.approx(
        cfg.train.lr * 0.8 ** (top + 1 - depth["blocks.0.attn.qkv.weight"])
    )
    assert where["backbone.norm.weight"]["lr"] == pytest.approx(cfg.train.lr * 0.8)  # the final norm: the last layer
    plain = recipes.param_groups(model, config({"freeze": "none"}).train)
    assert len(plain) == 1 and len(plain[0]["params"]) == len(names)  # no recipe: one group of every parameter


def snapshots(cfg, ds, checkpoint, stop_after=None):
    """The network's state after every epoch (from the checkpoint the run writes), and the run's outcome."""
    states = []

    def on_epoch(history):
        states.append(torch.load(checkpoint, weights_only=True)["net"])
        if stop_after is not None and len(history) == stop_after:
            raise KeyboardInterrupt  # as a kill would: the checkpoint of this epoch is on disk

    try:
        return states, train.fit(cfg, ds, CPU, checkpoint=checkpoint, feature_cache=False, on_epoch=on_epoch)
    except KeyboardInterrupt:
        return states, None


def changed(before: dict, after: dict) -> set[str]:
    """Stages whose parameters or BatchNorm statistics moved ('head' for the head)."""
    out = set()
    for name, value in after.items():
        if name.endswith("num_batches_tracked") or torch.equal(before[name], value):
            continue
        out.add(
            "head"
            if name.startswith("head.")
            else name.split(".")[1]
            if name.split(".")[1].startswith("layer")
            else "stem"
        )
    return out


def test_gradual_unfreezing_trains_one_more_stage_each_epoch_and_resumes_the_same(tmp_path):
    cfg = config({"freeze": "stem-layer1"}, epochs=4, unfreeze_after=1, unfreeze_every=1)
    ds = data.load(cfg.data)
    train.seed_everything(cfg.seed)
    initial = {k: v.clone() for k, v in models.build_model(cfg.model, 10).state_dict().items()}
    states, whole = snapshots(cfg, ds, tmp_path / "a.pt")
    moved = [changed(before, after) for before, after in zip([initial, *states], states)]
    assert moved == [{"head"}, {"head", "layer4"}, {"head", "layer3", "layer4"}, {"head", "layer2", "layer3", "layer4"}]
    assert [h["trains"] for h in whole.history] == [
        "head",
        "head+layer4",
        "head+layer4+layer3",
        "head+layer4+layer3+layer2",
    ]

    first, stopped = snapshots(cfg, ds, tmp_path / "b.pt", stop_after=2)
    assert stopped is None and len(first) == 2
    rest, resumed = snapshots(cfg, ds, tmp_path / "b.pt")  # picks up at epoch 3
    assert [changed(b, a) for b, a in zip([first[-1], *rest], rest)] == moved[2:]
    for a, b in zip(states, first + rest):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert (resumed.test_logits == whole.test_logits).all()
    assert [h["trains"] for h in resumed.history] == [h["trains"] for h in whole.history]


@pytest.mark.parametrize(
    "model, settings, message",
    [
        ({}, {"layer_decay": 0.7}, "train.layer_decay shape how the backbone trains, but model.freeze is 'backbone'"),
        ({}, {"unfreeze_after": 1}, "model.freeze is 'backbone'"),
        ({"freeze": "none"}, {"unfreeze_after": 2, "epochs": 2}, "must be less than train.epochs"),
        ({"freeze": "none"}, {"layer_decay": 1.5}, "less than or equal to 1"),
    ],
)
def test_recipes_that_cannot_work_are_refused_at_load_time(model, settings, message):
    with pytest.raises(ValueError, match=message):
        config(model, **settings)
