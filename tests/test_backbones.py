"""The backbone contract, checked on every ``conf/backbone/*.yaml`` (a new config is tested automatically),
plus pretrained loading: local files, Lightning checkpoints, the (hermetic) torch hub cache, errors."""

from __future__ import annotations

import re
from pathlib import Path

import hydra.utils
import pytest
import torch
import torchvision.models as tvm
from omegaconf import OmegaConf
from torch import nn

from camlab.models.backbones import Backbone, available_backbones, create_backbone, load_state_dict_file

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "conf" / "backbone").glob("*.yaml"))
RELU_ENDED = ("tiny_cnn", "resnet", "vgg16_gap", "inception_v3")  # last op is a ReLU (or concat of ReLUs)
# conf/backbone/timm.yaml (a timm resnet18) with other small timm models at random init: two more CNN families (the
# post-pooling conv_head / head norm removed; ConvNeXt's floor-mode stem), a one-block-per-stage Swin (NHWC maps,
# window attention: padded to its stride) and a ViT (patch tokens on their grid).
TIMM_MODELS = {"mobilenetv3_small_050": {}, "test_convnext": {},
               "swin_tiny_patch4_window7_224": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
               "test_vit": {}}
TIMM_CONFIG = next(f for f in CONFIGS if f.stem == "timm")
CASES = [(f, {}) for f in CONFIGS] + [(TIMM_CONFIG, {"model_name": m, "model_kwargs": kw})
                                      for m, kw in TIMM_MODELS.items()]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    """Any download attempt fails the test, and the hub cache is an empty tmp dir unless a test fills it."""

    def refuse(*args, **kwargs):
        raise AssertionError("camlab tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_configs_exist_and_match_registry():
    names = [OmegaConf.load(f).name for f in CONFIGS]
    assert names, "no conf/backbone/*.yaml found"
    assert sorted(names) == sorted(available_backbones()), "every backbone needs exactly one config"
    for f in CONFIGS:
        assert f.stem == OmegaConf.load(f).name


@pytest.mark.parametrize(("config", "options"), CASES,
                         ids=[f.stem + (f"-{o['model_name']}" if o else "") for f, o in CASES])
def test_backbone_contract(config, options):
    torch.manual_seed(0)
    cfg = OmegaConf.merge(OmegaConf.load(config), options)
    backbone = hydra.utils.instantiate(cfg)
    assert isinstance(backbone, Backbone)
    k, stride, min_size = backbone.num_features, backbone.stride, backbone.min_input_size
    assert all(isinstance(v, int) and v > 0 for v in (k, stride, min_size))

    # Non-square input, small enough to stay fast on CPU.
    h_in = max(64, min_size + 5)
    w_in = h_in + 16
    x = torch.randn(2, 3, h_in, w_in)
    feats = backbone(x)  # (N, K, h, w)
    assert feats.ndim == 4 and feats.shape[:2] == (2, k)
    h, w = feats.shape[-2:]
    assert (h, w) == (backbone.output_size(h_in), backbone.output_size(w_in))
    # ``stride`` is the true step of the map, and h ≈ H / stride up to rounding (plus the border that
    # unpadded convolutions lose, bounded by min_input_size - stride).
    for size in (h_in, w_in, 97):
        assert backbone.output_size(size + stride) == backbone.output_size(size) + 1
    slack = 1 + (min_size - stride) / stride
    assert abs(h - h_in / stride) <= slack and abs(w - w_in / stride) <= slack
    if cfg.name.startswith(RELU_ENDED):
        assert feats.min() >= 0

    first_conv = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    (feats.float() ** 2).mean().backward()
    grad = first_conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # every trainable parameter is part of the features (DDP's default needs a gradient for each)
    assert [n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None] == []

    # Smallest accepted input gives at least a 1×1 map; one pixel less is refused clearly.
    backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone.forward_features(x[:1]), backbone(x[:1]))  # timm's name, same fn
        assert min(backbone(torch.randn(1, 3, min_size, min_size)).shape[-2:]) >= 1
        for size in (97, 98, 99, 100):  # output_size is exact off the multiples of the stride too
            assert backbone(torch.zeros(1, 3, size, min_size)).shape[-2] == backbone.output_size(size)
        with pytest.raises(ValueError, match=f">= {min_size}"):
            backbone(torch.randn(1, 3, min_size - 1, min_size))


def test_unknown_backbone_lists_available_in_one_line():
    with pytest.raises(ValueError) as err:
        create_backbone("foo")
    message = str(err.value)
    assert "\n" not in message
    assert message == f"Unknown backbone 'foo'. Available: {', '.join(available_backbones())}"
    assert message.startswith("Unknown backbone 'foo'. Available: tiny_cnn, resnet18")


def test_unknown_option_names_accepted_ones():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['depth'\].*'width'"):
        create_backbone("tiny_cnn", depth=3)


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nope" / "weights.pth"
    with pytest.raises(FileNotFoundError) as err:
        create_backbone("resnet18", pretrained=str(path))
    message = str(err.value)
    assert f"'{path}' not found" in message and "pretrained=false" in message
    assert str(tmp_path / "hub" / "checkpoints") in message


@pytest.mark.parametrize("weights", [True, "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "DEFAULT"])
def test_uncached_torchvision_weights_fail_clearly(weights, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        create_backbone("resnet18", pretrained=weights)
    message = str(err.value)
    assert "not in the local torch cache" in message and "never downloads" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message


def test_bad_weights_names():
    with pytest.raises(ValueError, match="not a weights name of torchvision's resnet18"):
        create_backbone("resnet18", pretrained="ResNet50_Weights.IMAGENET1K_V1")
    with pytest.raises(ValueError, match="not a weights name of torchvision's resnet18"):
        create_backbone("resnet18", pretrained="IMAGENET1K_V9")
    for weights in (True, "IMAGENET1K_V1"):
        with pytest.raises(ValueError, match="'tiny_cnn' has no torchvision weights"):
            create_backbone("tiny_cnn", pretrained=weights)


def _resnet18_until_layer4(net: tvm.ResNet, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


@pytest.fixture
def resnet18_reference():
    """A randomly initialised torchvision resnet18 (eval, with non-trivial BN statistics)."""
    torch.manual_seed(1)
    net = tvm.resnet18()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _assert_same_features(backbone: Backbone, net: tvm.ResNet) -> None:
    x = torch.randn(2, 3, 64, 72)
    with torch.no_grad():
        expected = _resnet18_until_layer4(net, x)
        got = backbone.eval()(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_round_trip_torchvision_state_dict(tmp_path, resnet18_reference):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_reference.state_dict(), path)  # includes fc.*: ignored
    backbone = create_backbone("resnet18", pretrained=str(path), layer4_stride=2)
    _assert_same_features(backbone, resnet18_reference)
    # Same weights with WSOL's layer4 stride 1: loads, 2× finer map.
    assert create_backbone("resnet18", pretrained=path, layer4_stride=1)(torch.randn(1, 3, 64, 64)).shape[-1] == 4


def test_cached_torchvision_weights_are_used(tmp_path, resnet18_reference):
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(resnet18_reference.state_dict(), cache / "resnet18-f37072fd.pth")
    for weights in (True, "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        _assert_same_features(create_backbone("resnet18", pretrained=weights, layer4_stride=2), resnet18_reference)


@pytest.mark.parametrize("prefix", ["backbone.", "model.backbone."])
def test_lightning_checkpoint_backbone_keys(tmp_path, resnet18_reference, prefix):
    source = create_backbone("resnet18", layer4_stride=2)
    source.load_state_dict({k: v for k, v in resnet18_reference.state_dict().items() if not k.startswith("fc.")})
    state = {prefix + k: v for k, v in source.state_dict().items()}
    state["head.weight"] = torch.zeros(10, 512)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"lr": 0.1}}, path)
    assert set(load_state_dict_file(path)) == set(state)
    _assert_same_features(create_backbone("resnet18", pretrained=path, layer4_stride=2), resnet18_reference)


def test_vgg16_weights_fill_convs_and_extra_stays_random(tmp_path):
    torch.manual_seed(2)
    features = tvm.vgg.make_layers(tvm.vgg.cfgs["D"])  # torchvision vgg16().features, without its 100M-param head
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.6.weight"] = torch.zeros(1000, 4)  # heads are ignored, whatever their shape
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    torch.manual_seed(3)
    random = create_backbone("vgg16_gap")
    torch.manual_seed(3)
    loaded = create_backbone("vgg16_gap", pretrained=str(path))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.features(x), features[:30](x), rtol=0, atol=1e-6)
    torch.testing.assert_close(loaded.extra[0].weight, random.extra[0].weight)  # untouched by loading


def test_wrong_shape_or_missing_key_names_the_file(tmp_path, resnet18_reference):
    state = resnet18_reference.state_dict()
    bad_shape = dict(state, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    path = tmp_path / "bad_shape.pth"
    torch.save(bad_shape, path)
    with pytest.raises(ValueError, match=re.escape(f"'{path}'") + ".*shape mismatch in layer1.0.conv1.weight"):
        create_backbone("resnet18", pretrained=str(path))

    missing = {k: v for k, v in state.items() if not k.startswith("layer4.1.")}
    path = tmp_path / "missing.pth"
    torch.save(missing, path)
    with pytest.raises(ValueError, match=re.escape(f"'{path}'") + ".*missing feature keys: layer4.1.conv1.weight"):
        create_backbone("resnet18", pretrained=str(path))
    with pytest.warns(UserWarning, match="missing feature keys"):
        backbone = create_backbone("resnet18", pretrained=str(path), strict=False)
    torch.testing.assert_close(backbone.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])

    path = tmp_path / "not_a_state_dict.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match=re.escape(f"'{path}' does not hold a state dict")):
        create_backbone("tiny_cnn", pretrained=str(path))


def test_tiny_cnn_loads_local_file(tmp_path):
    source = create_backbone("tiny_cnn", width=8)
    path = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), path)
    loaded = create_backbone("tiny_cnn", pretrained=str(path), width=8)
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
