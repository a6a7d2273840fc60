import pytest
import torch
import torchvision

from bench import data, train
from bench.config import RunConfig
from bench.models import WeightsError, build_backbone, build_model, frozen_stages, hub_file
from tests.helpers import TINY


def saved_resnet50(path, seed=0):
    """A ResNet-50 state dict with non-default BatchNorm statistics, as a trained one has."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet50()
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


@pytest.mark.parametrize(
    "freeze, augment, frozen_prefixes",
    [
        ("stem-layer3", "none", ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")),  # layer4 trains
        ("backbone", "flip-crop", ("",)),  # random augmentation: the full path, backbone run every step
    ],
)
def test_frozen_means_bit_identical_after_training(tmp_path, freeze, augment, frozen_prefixes):
    loaded = saved_resnet50(tmp_path / "r50.pth")
    cfg = RunConfig.model_validate(
        {
            **TINY,
            "input": {"resolution": 32, "augment": augment},
            "model": {**TINY["model"], "weights": f"file:{tmp_path / 'r50.pth'}", "freeze": freeze},
        }
    )
    ds = data.load(cfg.data)
    out = train.fit(cfg, ds, torch.device("cpu"))
    assert out.feature_cache == "off"
    after = out.model.backbone.state_dict()
    frozen = [k for k in after if k.startswith(frozen_prefixes)]
    assert frozen and all(torch.equal(after[k], loaded[k]) for k in frozen)  # weights and BN buffers
    moving = [k for k in after if k not in frozen]
    if moving:  # the trainable stage really trained, BatchNorm statistics included
        assert any(not torch.equal(after[k], loaded[k]) for k in moving if "running_mean" in k)
        assert any(not torch.equal(after[k], loaded[k]) for k in moving if k.endswith("conv1.weight"))
