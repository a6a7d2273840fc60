"""The network's memory format, chosen by timing on this machine (bench.training.layout): timed once per
processor, torch, network, resolution and pass; taken over the default only with a margin; the timing leaves
the run exactly as it would be without it; a run uses and records the layout chosen, and its cached features
say which layout computed them."""

import json

import pytest
import torch

from bench import data
from bench.config import RunConfig
from bench.infra.files import cache_root
from bench.models import build_model
from bench.training import layout
from bench.training import loop as train
from tests.helpers import TINY

CPU = torch.device("cpu")


def config(**sections) -> RunConfig:
    tree = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for section, values in sections.items():
        tree[section] = {**tree.get(section, {}), **values}
    return RunConfig.model_validate(tree)


@pytest.fixture
def timings(monkeypatch, tmp_path):
    """layout.measure replaced by figures the test sets per resolution, each call counted; an empty cache."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    figures, calls = {}, []

    def measure(net, batch, resolution, device, dtype, what):
        calls.append((resolution, what))
        return figures[resolution]

    monkeypatch.setattr(layout, "measure", measure)
    return figures, calls


def test_a_layout_is_timed_once_per_shape_and_taken_only_with_a_margin(timings):
    figures, calls = timings
    slow, fast = 1.0, 1.0 / layout.MARGIN
    figures.update({16: {"contiguous": slow, "channels_last": fast}, 24: {"contiguous": slow, "channels_last": 0.98}})
    cfg16, cfg24 = config(input={"resolution": 16}), config(input={"resolution": 24})
    net = build_model(cfg16.model, 10)
    assert layout.choose(net, cfg16, CPU, None) == torch.channels_last  # exactly the margin faster
    assert layout.choose(net, cfg16, CPU, None) == torch.channels_last
    assert calls == [(16, "forward")]  # remembered, not timed again
    assert layout.choose(net, cfg24, CPU, None) == torch.contiguous_format  # 2% faster: a near tie keeps the default
    finetune = config(input={"resolution": 16}, model={"freeze": "none"})
    layout.choose(net, finetune, CPU, None)
    assert calls == [(16, "forward"), (24, "forward"), (16, "train")]  # a network that trains times training
    memo = json.loads((cache_root() / "layouts.json").read_text())
    key = layout.layout_key(cfg16, "forward", None)
    assert memo[key] == figures[16] and torch.__version__ in key and f"{torch.get_num_threads()} threads" in key
    # a damaged memo is timed again, never trusted
    (cache_root() / "layouts.json").write_text(json.dumps({key: {"contiguous": "fast"}}))
    layout.choose(net, cfg16, CPU, None)
    assert calls[-1] == (16, "forward")


def test_a_timing_that_runs_out_of_memory_keeps_the_default_and_is_not_remembered(timings, monkeypatch):
    def no_room(*a):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 123 bytes")

    monkeypatch.setattr(layout, "measure", no_room)
    cfg = config()
    assert layout.choose(build_model(cfg.model, 10), cfg, CPU, None) == torch.contiguous_format
    assert not (cache_root() / "layouts.json").exists()
    monkeypatch.setattr(layout, "measure", lambda *a: 1 / 0)  # any other error is the caller's to see
    with pytest.raises(ZeroDivisionError):
        layout.choose(build_model(cfg.model, 10), cfg, CPU, None)


def test_cuda_takes_channels_last_without_timing(timings):
    _, calls = timings
    cfg = config()
    assert layout.choose(build_model(cfg.model, 10), cfg, torch.device("cuda"), torch.bfloat16) == torch.channels_last
    assert calls == []


@pytest.mark.parametrize("what", ["forward", "train"])
def test_timing_a_layout_leaves_the_network_and_the_random_state_untouched(what):
    cfg = config(model={"freeze": "none"}, input={"resolution": 16})
    torch.manual_seed(3)
    net = build_model(cfg.model, 10).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    times = layout.measure(net, 4, 16, CPU, None, what)
    assert set(times) == {"contiguous", "channels_last"} and all(t > 0 for t in times.values())
    assert torch.equal(torch.get_rng_state(), rng)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm's running statistics included
    assert net.training and all(p.grad is None for p in net.parameters())
    assert layout.format_of(net) == "contiguous"


@pytest.mark.slow  # two short fine-tuning runs and two frozen ones
def test_a_run_uses_and_records_the_layout_its_timing_chose(timings):
    figures, _ = timings
    finetune = config(model={"arch": "resnet18", "freeze": "none"}, train={"epochs": 1}, data={"limit_train": 40})
    ds = data.load(finetune.data)
    for fmt, times in (("channels_last", (1.0, 0.5)), ("contiguous", (0.5, 1.0))):
        figures[finetune.input.resolution] = dict(zip(["contiguous", "channels_last"], times, strict=True))
        (cache_root() / "layouts.json").unlink(missing_ok=True)
        out = train.fit(finetune, ds, CPU, feature_cache=False)
        assert (out.memory_format, out.optimizer_impl) == (fmt, "fused")
        assert layout.format_of(out.model) == fmt
        assert out.model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last) == (
            fmt == "channels_last"
        )
    # frozen features computed in one layout are not taken for the other (they differ in the last bits)
    frozen = config(train={"epochs": 1})
    ds = data.load(frozen.data)
    states = []
    for times in ((1.0, 0.5), (0.5, 1.0)):
        figures[frozen.input.resolution] = dict(zip(["contiguous", "channels_last"], times, strict=True))
        (cache_root() / "layouts.json").unlink(missing_ok=True)
        out = train.fit(frozen, ds, CPU)
        states.append((out.memory_format, out.feature_cache.value))
    assert states == [("channels_last", "computed"), ("contiguous", "computed")]


@pytest.mark.parametrize("arch", ["resnet18", "cifar_resnet20", "timm:resnet18"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_a_frozen_pass_runs_with_its_batchnorms_folded_and_computes_the_same(arch, fmt):
    """layout.folded: no BatchNorm left, the same outputs to float rounding (with BatchNorm statistics far from
    their defaults, as pretrained weights have), the network's layout kept, the network itself untouched."""
    from bench.models import build_backbone

    torch.manual_seed(0)
    net = build_backbone("none", arch)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.2, 3)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    net = net.to(memory_format=fmt)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = layout.folded(net)
    assert fast is not net and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert layout.format_of(fast) == layout.format_of(net)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        want, got = net.eval()(x), fast(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_a_network_fx_cannot_trace_runs_unfolded():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: symbolic tracing refuses it
                return self.bn(self.conv(x))
            return self.conv(x)

    net = Branchy()
    assert layout.folded(net) is net and not net.training
