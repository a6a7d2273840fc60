"""He et al.'s CIFAR networks and recipe: Table 6's parameter counts, the shape contract, option-A shortcuts,
stages that freeze, and the paper's augmentation, normalisation and schedule keys."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from bench.cifar_nets import BasicBlock, CifarNet
from bench.config import CIFAR_ARCHS, RunConfig, TrainConfig
from bench.models import build_model, stage_names
from bench.training.loop import lr_factor
from bench.training.transforms import BatchTransform, flip_crop
from bench.util import flatten

PAPER = {"model": {"weights": "none", "freeze": "none", "head": {"hidden": 0, "dropout": 0.0}}}


def config(arch: str, **model) -> RunConfig:
    return RunConfig.model_validate({"model": {**PAPER["model"], "arch": arch, **model}})


# Table 6 (He et al. 2016, p. 776): parameters in millions, as printed (two significant figures)
TABLE6_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


@pytest.mark.parametrize("depth", sorted(TABLE6_PARAMS))
def test_parameter_counts_match_table6(depth):
    for kind in ("resnet", "plain"):  # option A shortcuts have no parameters: plain and residual count alike
        net = build_model(config(f"cifar_{kind}{depth}").model, 10)
        params = sum(p.numel() for p in net.parameters())
        assert round(params / 1e6, 2 if depth < 100 else 1) == TABLE6_PARAMS[depth], (kind, depth, params)


@pytest.mark.parametrize("arch", ["cifar_resnet20", "cifar_plain32"])
def test_shape_contract_and_layers(arch):
    net = build_model(config(arch).model, 7).eval()
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 7)  # 32 px in, C logits out
    assert net.backbone.num_features == 64
    convs = [m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    n = CIFAR_ARCHS[arch][0]
    assert len(convs) + len(linears) == 6 * n + 2  # weighted layers
    assert all(c.kernel_size == (3, 3) for c in convs)
    maps = []
    for stage in ("layer1", "layer2", "layer3"):
        net.backbone.get_submodule(stage).register_forward_hook(lambda m, i, o: maps.append(tuple(o.shape[1:])))
    net(torch.randn(1, 3, 32, 32))
    assert maps == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]


def test_option_a_shortcut_subsamples_and_zero_pads():
    block = BasicBlock(16, 32, stride=2, residual=True)
    x = torch.randn(2, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 4, 4)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])  # the old channels in the middle, subsampled
    assert torch.count_nonzero(s[:, :8]) == 0 and torch.count_nonzero(s[:, 24:]) == 0
    same = BasicBlock(16, 16, stride=1, residual=True)
    assert same.shortcut(x) is x  # identity where nothing changes


def test_plain_net_has_no_shortcut():
    torch.manual_seed(0)
    res, plain = CifarNet(3, residual=True), CifarNet(3, residual=False)
    plain.load_state_dict(res.state_dict())  # same weights, only the shortcuts differ
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(res.eval()(x), plain.eval()(x))
    block = BasicBlock(16, 16, 1, residual=False).eval()
    with torch.no_grad():
        block.conv1.weight.zero_()  # the block's path outputs relu(bn2(conv2(relu(bn1(0))))) alone: no x added
        assert torch.allclose(block(x[:, :1].repeat(1, 16, 1, 1)), block(torch.zeros(2, 16, 32, 32)))


def test_he_initialisation():
    net = CifarNet(3)
    w = net.layer3[0].conv1.weight  # fan_out = 64 * 9
    assert abs(w.std().item() - math.sqrt(2 / (64 * 9))) < 0.01


def test_stages_freeze_like_every_family():
    assert stage_names("cifar_resnet56") == ("stem", "layer1", "layer2", "layer3")
    net = build_model(config("cifar_resnet20", freeze="stem-layer2").model, 10)
    trainable = {n.split(".")[0] for n, p in net.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"layer3"}
    net.train()
    assert not net.backbone.layer2.training and net.backbone.layer3.training  # frozen BatchNorm stays in eval
    with pytest.raises(ValidationError, match="stem, layer1, layer2, layer3 .*N from 1 to 3"):
        config("cifar_resnet20", freeze="stem-stage4")


def test_bad_arch_and_normalize_are_refused():
    with pytest.raises(ValidationError, match="did you mean 'cifar_resnet20'"):
        config("cifar-resnet20")
    with pytest.raises(ValidationError, match="pixel-mean"):
        RunConfig.model_validate(
            {**PAPER, "model": {**PAPER["model"], "arch": "cifar_resnet20"}, "input": {"normalize": "model"}}
        )
    with pytest.raises(ValidationError, match="flip-crop"):
        RunConfig.model_validate({"input": {"normalize": "pixel-mean", "augment": "trivialaugment"}})


def test_zero_padding_crop():
    torch.manual_seed(0)
    x = torch.full((64, 3, 8, 8), 5.0)
    out = flip_crop(x, pad=4, mode="constant")
    assert out.shape == x.shape
    assert set(out.unique().tolist()) == {0.0, 5.0}  # zeros come in from the padding
    assert set(flip_crop(x, pad=4).unique().tolist()) == {5.0}  # reflect padding brings none


def test_pixel_mean_is_subtracted_before_the_zero_padding():
    cfg = RunConfig.model_validate(
        {"input": {"resolution": 16, "normalize": "pixel-mean", "augment": "flip-crop-zero"}}
    )
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    mean = images.double().mean(0).float() / 255
    ev = BatchTransform(cfg.input, False, cfg.model, mean)
    out = ev(images)
    assert torch.allclose(out.mean(0), torch.zeros(3, 16, 16), atol=1e-6)  # the mean image becomes zero
    tr = BatchTransform(cfg.input, True, cfg.model, mean)
    assert tr(images).shape == (10, 3, 16, 16)
    with pytest.raises(ValueError, match="pixel_mean"):
        BatchTransform(cfg.input, False, cfg.model)


def test_paper_schedule_milestones_and_constant_warmup():
    spe = 352  # 45,000 images at batch 128 (the last partial batch included)
    tc = TrainConfig(
        optimizer="sgd",
        lr=0.1,
        epochs=182,
        schedule="multistep",
        milestones=(91, 136.5),
        warmup_epochs=400 / spe,
        warmup_shape="constant",
    )
    assert lr_factor(tc, 0, spe) == lr_factor(tc, 399, spe) == 0.1  # ResNet-110's lr 0.01
    assert lr_factor(tc, 400, spe) == 1.0
    assert lr_factor(tc, 32031, spe) == 1.0 and lr_factor(tc, 32032, spe) == pytest.approx(0.1)  # 91 * 352
    assert lr_factor(tc, 48048, spe) == pytest.approx(0.01)  # 136.5 * 352
    with pytest.raises(ValidationError, match="milestones"):
        TrainConfig(schedule="multistep")
    with pytest.raises(ValidationError, match="multistep"):
        TrainConfig(milestones=(3,), epochs=5)
    with pytest.raises(ValidationError, match="inside"):
        TrainConfig(schedule="multistep", milestones=(9,), epochs=5)


def test_new_keys_stay_out_of_old_run_ids():
    from bench.infra.identity import ADDED_KEYS, Fingerprints, identity

    tree = flatten(identity(RunConfig(), Fingerprints("folder:x", "none")))
    assert not {k for k in ADDED_KEYS if k in tree}
    paper = RunConfig.model_validate({"train": {"nesterov": False, "schedule": "multistep", "milestones": [2]}})
    kept = flatten(identity(paper, Fingerprints("folder:x", "none")))
    assert kept["train.nesterov"] is False and kept["train.milestones"] == [2.0]


def test_sgd_momentum_follows_nesterov():
    from bench.training.loop import make_optimizer

    net = torch.nn.Linear(2, 2)
    cpu = torch.device("cpu")
    assert make_optimizer(TrainConfig(optimizer="sgd"), net, cpu).defaults["nesterov"] is True
    assert make_optimizer(TrainConfig(optimizer="sgd", nesterov=False), net, cpu).defaults["nesterov"] is False
