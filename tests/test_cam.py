"""CAM numerics against plainly written loops, and the GAP identity mean(M^c) = y^c - b^c."""

import pytest
import torch
from torch import nn

from camlab.cam import all_class_activation_maps, class_activation_maps, minmax_normalize, upsample
from camlab.models import CAMClassifier


class ConvBackbone(nn.Module):
    """A tiny backbone with a known channel count, independent of the registry."""

    def __init__(self, k: int = 6) -> None:
        super().__init__()
        self.num_features = k
        self.conv = nn.Conv2d(3, k, 3, stride=2, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


@torch.no_grad()
def loop_cam(features, weight, cls):
    """M^c(i, j) = sum_k w[c, k] * A[k, i, j], written as explicit loops in float64."""
    b, k, h, w = features.shape
    out = torch.zeros(b, h, w, dtype=torch.float64)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                s = 0.0
                for kk in range(k):
                    s += float(weight[cls[n], kk]) * float(features[n, kk, i, j])
                out[n, i, j] = s
    return out


@pytest.fixture
def model():
    torch.manual_seed(0)
    return CAMClassifier(ConvBackbone(6), num_classes=4).eval()


def test_cam_equals_explicit_loop(model):
    x = torch.randn(3, 3, 12, 10)
    out = model(x)
    cls = torch.tensor([0, 3, 1])
    cams = model.cam(out["features"], cls)
    ref = loop_cam(out["features"], model.head.weight, cls)
    assert cams.shape == (3, 6, 5)
    torch.testing.assert_close(cams.double(), ref, atol=1e-5, rtol=1e-5)


def test_cam_several_classes_and_all_classes(model):
    x = torch.randn(2, 3, 8, 8)
    f = model(x)["features"]
    top = torch.tensor([[2, 0], [1, 3]])
    many = class_activation_maps(f, model.head.weight, top)
    assert many.shape == (2, 2, 4, 4)
    everything = all_class_activation_maps(f, model.head.weight)
    for n in range(2):
        for j in range(2):
            torch.testing.assert_close(many[n, j], everything[n, top[n, j]])
            torch.testing.assert_close(
                many[n, j].double(), loop_cam(f[n : n + 1], model.head.weight, [int(top[n, j])])[0],
                atol=1e-5, rtol=1e-5,
            )


def test_gap_identity_spatial_mean_equals_logit_minus_bias(model):
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    model = model.double()
    out = model(x)
    for c in range(4):
        cams = model.cam(out["features"], torch.full((4,), c))
        mean = cams.mean(dim=(1, 2))
        torch.testing.assert_close(mean, out["logits"][:, c] - model.head.bias[c], atol=1e-12, rtol=0)


def test_gmp_pools_the_max_and_gap_identity_does_not_hold():
    torch.manual_seed(1)
    m = CAMClassifier(ConvBackbone(5), num_classes=3, pool="gmp").double().eval()
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    out = m(x)
    f = out["features"]
    pooled = torch.stack([torch.stack([f[n, k].max() for k in range(5)]) for n in range(2)])
    torch.testing.assert_close(out["logits"], pooled @ m.head.weight.T + m.head.bias)
    mean = m.cam(f, torch.zeros(2, dtype=torch.long)).mean(dim=(1, 2))
    assert not torch.allclose(mean, out["logits"][:, 0] - m.head.bias[0])


def test_bad_pool_and_backbone_without_num_features():
    with pytest.raises(ValueError, match="pool must be one of"):
        CAMClassifier(ConvBackbone(), num_classes=3, pool="avg")
    with pytest.raises(ValueError, match="num_features"):
        CAMClassifier(nn.Conv2d(3, 4, 3), num_classes=3)


def test_minmax_normalize_constant_and_nan_become_zero():
    cams = torch.stack([torch.arange(6.0).view(2, 3), torch.full((2, 3), 4.0), torch.ones(2, 3)])
    cams[2, 0, 1] = float("nan")
    out = minmax_normalize(cams)
    torch.testing.assert_close(out[0], torch.arange(6.0).view(2, 3) / 5)
    assert torch.equal(out[1], torch.zeros(2, 3))
    assert torch.equal(out[2], torch.zeros(2, 3))


def test_upsample_is_bilinear_half_pixel():
    # A 1x2 map [0, 1] upsampled to width 4 with align_corners=False: 0, 0.25, 0.75, 1.
    out = upsample(torch.tensor([[[0.0, 1.0]]]), (1, 4))
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))
