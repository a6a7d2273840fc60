import pytest
import timm
import torch
import torchvision
from pydantic import ValidationError

from bench import cost, data, models
from bench.config import ConfigError, InputConfig, ModelConfig, RunConfig, WeightsSpec
from bench.models import build_backbone, build_model, frozen_stages
from bench.pretrained import WeightsError, hub_file
from bench.study import load_study_file
from bench.training import loop as train
from bench.training.transforms import BatchTransform
from tests.helpers import TINY


def saved_resnet50(path, seed=0, arch="resnet50"):
    """A state dict (ImageNet classifier included, as published) with non-default BatchNorm statistics,
    as a trained one has; `arch` as in model.arch."""
    torch.manual_seed(seed)
    net = timm.create_model(arch[5:]) if arch.startswith("timm:") else torchvision.models.get_model(arch)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(1000)
    state = net.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_torchvision_weights_load_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    enum = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    expected = saved_resnet50(hub_file(enum.url))
    assert hub_file(enum.url) == tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    got = build_backbone("torchvision:IMAGENET1K_V1").state_dict()
    assert set(got) == set(expected) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_missing_weights_offline_say_which_file_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, *args, **kwargs):
        raise OSError(f"no network to fetch {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as e:
        build_backbone("torchvision:IMAGENET1K_V2")
    msg = str(e.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in msg
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in msg and "model.weights: file:" in msg


def test_local_checkpoint_file_and_its_errors(tmp_path):
    expected = saved_resnet50(tmp_path / "r50.pth", seed=1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in expected.items()}}, tmp_path / "wrapped.pth")
    for f in ("r50.pth", "wrapped.pth"):  # plain, and wrapped the way training scripts save it
        got = build_backbone(f"file:{tmp_path / f}").state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in got)
    with pytest.raises(WeightsError, match="does not exist"):
        build_backbone(f"file:{tmp_path / 'nope.pth'}")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="is not a ResNet-50 state dict: .* keys missing"):
        build_backbone(f"file:{tmp_path / 'other.pth'}")


def test_timm_weights_offline_error_points_to_a_local_file():
    with pytest.raises(WeightsError, match=r"(?s)timm:resnet50.a1_in1k.*huggingface.*file:"):  # HF_HUB_OFFLINE=1
        build_backbone("timm:resnet50.a1_in1k")


def test_freeze_settings_choose_stages():
    assert frozen_stages("backbone") == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert frozen_stages("stem-layer2") == ["stem", "layer1", "layer2"]
    assert frozen_stages("none") == []
    model = build_model(RunConfig(model={"weights": "none", "freeze": "stem-layer3"}).model, 10)
    trainable = {n.split(".")[0] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}
    model.train()
    assert not model.backbone.layer3.training and model.backbone.layer4.training and model.head.training


VIT = "timm:vit_tiny_patch16_224"


@pytest.mark.parametrize(
    "arch, freeze, augment, frozen_prefixes",
    [
        ("resnet50", "stem-layer3", "none", ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")),  # layer4 trains
        ("resnet50", "backbone", "flip-crop", ("",)),  # random augmentation: the full path, backbone every step
        ("resnet18", "stem-layer3", "none", ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")),
        ("timm:convnext_atto", "stem-stage3", "none", ("stem.", "stages.0.", "stages.1.", "stages.2.")),  # LayerNorm
        (
            "timm:mobilenetv3_small_050",
            "stem-stage4",
            "none",
            ("conv_stem.", "bn1.", *(f"blocks.{i}." for i in range(4))),
        ),
        (VIT, "stem-stage11", "none", ("cls_token", "pos_embed", "patch_embed.", *(f"blocks.{i}." for i in range(11)))),
    ],
)
def test_frozen_means_bit_identical_after_training(tmp_path, arch, freeze, augment, frozen_prefixes):
    loaded = saved_resnet50(tmp_path / "w.pth", arch=arch)
    cfg = RunConfig.model_validate(
        {
            **TINY,
            "input": {"resolution": 32, "augment": augment},
            "model": {**TINY["model"], "arch": arch, "weights": f"file:{tmp_path / 'w.pth'}", "freeze": freeze},
            "train": {**TINY["train"], "epochs": 1},
        }
    )
    ds = data.load(cfg.data)
    out = train.fit(cfg, ds, torch.device("cpu"), feature_cache=False)  # frozen stages inside the trained network
    assert out.feature_cache == "off"  # (the prefix cache's own frozen check: tests/test_prefix.py)
    after = out.model.backbone.state_dict()
    frozen = [k for k in after if k.startswith(frozen_prefixes)]
    assert frozen and all(torch.equal(after[k], loaded[k]) for k in frozen)  # weights and BN buffers
    moving = [k for k in after if k not in frozen]
    if moving:  # the trainable stages really trained, BatchNorm statistics included where there are any
        assert any(not torch.equal(after[k], loaded[k]) for k in moving if k.endswith("weight"))
        if any("running_mean" in k for k in moving):
            assert any(not torch.equal(after[k], loaded[k]) for k in moving if "running_mean" in k)
    out.model.train()  # frozen stages stay in eval mode (BatchNorm statistics, dropout), the rest trains
    for name, m in out.model.backbone.named_modules():
        params = [f"{name}.{p}".lstrip(".") for p, _ in m.named_parameters()]
        if name and params and all(p.startswith(frozen_prefixes) for p in params):
            assert not m.training, name


def test_torchvision_resnet18_weights_from_the_hub_cache_and_its_tags(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    enum = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    expected = saved_resnet50(hub_file(enum.url), arch="resnet18")
    assert hub_file(enum.url) == tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    net = build_backbone("torchvision:IMAGENET1K_V1", "resnet18")
    got = net.state_dict()
    assert net.num_features == 512 and set(got) == set(expected) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(got[k], expected[k]) for k in got)
    model = build_model(ModelConfig(arch="resnet18", weights="torchvision:IMAGENET1K_V1"), 10)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10) and model.head[0].in_features == 512
    allowed = "ResNet18_Weights has no IMAGENET1K_V2; resnet18 takes model.weights torchvision:IMAGENET1K_V1"
    with pytest.raises(ValidationError, match=allowed):  # at load time, without I/O
        ModelConfig(arch="resnet18", weights="torchvision:IMAGENET1K_V2")
    with pytest.raises(WeightsError, match=allowed):
        build_backbone("torchvision:IMAGENET1K_V2", "resnet18")
    ModelConfig(arch="resnet152", weights="torchvision:IMAGENET1K_V2")  # deeper ResNets have V2


def test_timm_weights_load_from_the_hugging_face_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    hub = tmp_path / "huggingface" / "hub"  # what $HF_HOME/hub is; HF_HUB_OFFLINE=1 (conftest)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    torch.manual_seed(0)
    published = timm.create_model("vit_tiny_patch16_224", num_classes=21843).state_dict()  # as on the Hub
    repo, commit = hub / "models--timm--vit_tiny_patch16_224.augreg_in21k", "0123456789abcdef" * 2 + "01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in published.items()}, repo / "snapshots" / commit / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)

    model = build_model(ModelConfig(arch=VIT, weights="timm:vit_tiny_patch16_224.augreg_in21k"), 10)
    got = model.backbone.state_dict()
    assert set(got) == set(published) - {"head.weight", "head.bias"} and model.backbone.num_features == 192
    assert all(torch.equal(got[k], published[k]) for k in got)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)  # 2x2 patches: the position embedding follows
    with pytest.raises(WeightsError) as e:  # another tag, not in the cache
        build_backbone("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k", VIT)
    msg = str(e.value)
    assert str(hub / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k") in msg and "model.weights: file:" in msg


@pytest.mark.parametrize(
    "model, expected",
    [
        ({"arch": "resnet21"}, "expected resnet18, resnet34, resnet50, resnet101, resnet152 (torchvision) or timm:"),
        ({"arch": "timm:convnxt_tiny"}, "timm has no model 'convnxt_tiny' (did you mean 'convnext_tiny'?)"),
        ({"arch": "timm:convnext_tiny.fb_in22k"}, "a pretrained tag goes in model.weights: timm:<model>.<tag>"),
        ({"arch": "timm:convnext_tiny"}, "need a torchvision arch (resnet18, resnet34"),
        ({"arch": "timm:convnext_tiny", "weights": "timm:resnet50.a1_in1k"}, "its tags: timm:convnext_tiny."),
        ({"arch": "resnet18", "weights": "timm:resnet18.nope"}, "not timm pretrained weights of resnet18"),
        ({"arch": "timm:convnext_atto", "weights": "none", "freeze": "stem-layer3"}, "stage1, stage2, stage3, stage4"),
        ({"arch": "timm:convnext_atto", "weights": "none", "freeze": "stem-stage5"}, "N from 1 to 4"),
        ({"freeze": "stem-stage5"}, "its stages are stem, layer1, layer2, layer3, layer4"),
        ({"freeze": "stem-layer9"}, "got 'stem-layer9'; input should be 'backbone', 'stem-layer3'"),
    ],
)
def test_arch_weights_and_freeze_are_checked_when_the_study_loads(write_study, model, expected):
    study = {"study": "s", "defaults": {"model": model}}
    with pytest.raises(ConfigError, match="invalid study file") as e:
        load_study_file(write_study(study))
    assert expected in str(e.value)


def test_valid_spellings_of_every_family():
    """Each loads as written, and its weights read as (kind, tag, the timm name whose pretrained config applies)."""
    for model, kind, tag, timm_name in (
        ({"arch": "resnet50", "weights": "timm:resnet50.a1_in1k"}, "timm", "resnet50.a1_in1k", "resnet50.a1_in1k"),
        (
            {"arch": "timm:convnext_tiny", "weights": "timm:convnext_tiny.fb_in22k", "freeze": "stem-stage2"},
            *("timm", "convnext_tiny.fb_in22k", "convnext_tiny.fb_in22k"),
        ),
        ({"arch": "timm:convnext_tiny", "weights": "timm:convnext_tiny"}, "timm", "convnext_tiny", "convnext_tiny"),
        ({"arch": VIT, "weights": "file:/w.pth", "freeze": "stem-stage11"}, "file", "/w.pth", VIT[5:]),
        ({"arch": "resnet101", "weights": "none", "freeze": "stem-stage4"}, "none", "", "resnet101"),
        ({"arch": "resnet34", "head": {"kind": "knn"}}, "torchvision", "IMAGENET1K_V1", "resnet34"),
    ):
        cfg = ModelConfig.model_validate(model)
        assert cfg.weights_spec == WeightsSpec(kind, tag) and cfg.weights_spec.timm_name(cfg.arch) == timm_name


def test_stage_names_of_each_family():
    resnet = ("stem", "layer1", "layer2", "layer3", "layer4")
    assert models.stage_names("resnet18") == models.stage_names("timm:resnet18") == resnet
    assert models.stage_names("timm:convnext_atto") == ("stem", "stage1", "stage2", "stage3", "stage4")
    assert models.stage_names(VIT) == ("stem", *(f"stage{i}" for i in range(1, 13)))
    assert models.stage_names("timm:efficientnet_b0") == ("stem", *(f"stage{i}" for i in range(1, 8)))
    with torch.device("meta"):
        convnext, vit = build_backbone("none", "timm:convnext_atto"), build_backbone("none", VIT)
    assert models.stages(convnext)["tail"] == ["head.norm.weight", "head.norm.bias"]  # trains unless backbone
    modules, params = models.freeze_plan(vit, "stem")
    assert modules == ["patch_embed"] and {"cls_token", "pos_embed"} <= set(params)
    assert models.stages(vit)["stage12"][-2:] == ["norm.weight", "norm.bias"]  # the final norm: last block's


def test_normalize_model_uses_the_weights_own_mean_and_std():
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert models.input_stats("resnet18", "torchvision:IMAGENET1K_V1") == imagenet
    assert models.input_stats("timm:convnext_tiny", "timm:convnext_tiny.fb_in22k") == imagenet
    assert models.input_stats(VIT, "none") == ((0.5,) * 3, (0.5,) * 3)  # its default pretrained tag's
    x = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    vit = ModelConfig(arch=VIT, weights="none")
    assert torch.allclose(BatchTransform(InputConfig(resolution=16, normalize="model"), False, vit)(x), torch.ones(1))
    with pytest.raises(ValueError, match="needs the model"):
        BatchTransform(InputConfig(resolution=16, normalize="model"), False)


def test_flops_per_arch_and_stage_from_torchs_flop_counter(monkeypatch):
    for arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):  # torchvision's own figures
        published = torchvision.models.get_model_weights(arch).IMAGENET1K_V1.meta["_ops"]
        assert cost.stage_macs(arch, 224)["total"] / 1e9 == pytest.approx(published, rel=1e-3)
    assert cost.trainable_share("resnet50", 224, "stem-layer3") == pytest.approx(0.198, abs=0.001)  # layer4
    assert cost.trainable_share("resnet50", 224, "stem") == pytest.approx(1 - 0.118 / 4.089, abs=0.001)
    vit = cost.stage_macs(VIT, 32)
    assert vit["total"] < cost.stage_macs(VIT, 224)["total"] / 20  # 4 patches instead of 196
    assert cost.trainable_share(VIT, 32, "stem-stage11") == pytest.approx(vit["stage12"] / vit["total"])
    cost.stage_macs.cache_clear()  # from disk now: the counter must not run again
    import torch.utils.flop_counter

    real_counter = torch.utils.flop_counter.FlopCounterMode
    monkeypatch.setattr(torch.utils.flop_counter, "FlopCounterMode", None)
    assert cost.stage_macs("resnet50", 224)["layer4"] / 1e9 == pytest.approx(0.809, abs=0.001)
    frozen, probe = RunConfig(), RunConfig(model={"head": {"kind": "logreg"}})
    assert cost.estimate_tflops(probe) == cost.estimate_tflops(frozen) == pytest.approx(4.089e-3 * 60_000, rel=1e-3)
    # a total alone (a run's compute for the progress bar) is counted without the stage split (timm's grouping)
    monkeypatch.setattr(torch.utils.flop_counter, "FlopCounterMode", real_counter)
    monkeypatch.setattr(models, "stages", lambda net: pytest.fail("split a total-only count"))
    total = cost.forward_macs("resnet18", 96)
    monkeypatch.undo()
    assert cost.stage_macs("resnet18", 96)["total"] == total and "layer4" in cost.stage_macs("resnet18", 96)
