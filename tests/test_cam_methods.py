"""CAM methods: the Grad-CAM = ReLU(CAM) / (h w) identity through an independent full-model backward pass,
Grad-CAM++ / XGrad-CAM / LayerCAM against plain per-channel loops and a hand-worked example, models without
GAP, inference mode, the callback in a fast_dev_run, and readable errors."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict, read_write
from torch import nn

from camlab.callbacks import CAMLocalization
from camlab.cam_methods import METHODS, compute_cams
from camlab.models import CAMClassifier


class ConvBackbone(nn.Module):
    """Conv + ReLU features with a known channel count, independent of the backbone registry."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.num_features = k
        self.conv = nn.Conv2d(3, k, 3, stride=2, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class MLPHeadModel(nn.Module):
    """No pooling at all: an MLP on the flattened feature map, reached through ``head_forward``."""

    def __init__(self, k: int = 4, hw: tuple[int, int] = (4, 3), num_classes: int = 3) -> None:
        super().__init__()
        self.backbone = ConvBackbone(k)
        self.mlp = nn.Sequential(nn.Linear(k * hw[0] * hw[1], 16), nn.Tanh(), nn.Linear(16, num_classes))

    def head_forward(self, features):
        return self.mlp(features.flatten(1))  # (B, C)

    def forward(self, x):
        features = self.backbone(x)
        return {"logits": self.head_forward(features), "features": features}


def full_model_gradients(model, x, classes):
    """dy^c/dA by one backward pass through the WHOLE model (backbone included), no head re-run, no hooks."""
    out = model(x)
    a = out["features"]
    a.retain_grad()
    out["logits"].gather(1, classes.view(-1, 1)).sum().backward()
    return a.detach().double(), a.grad.detach().double()


def loop_maps(a, g, method):
    """Grad-CAM / Grad-CAM++ / XGrad-CAM / LayerCAM written channel by channel, pixel by pixel, in Python floats."""
    b, k, h, w = a.shape
    out = torch.zeros(b, h, w, dtype=torch.float64)
    for n in range(b):
        weights = []
        for kk in range(k):
            total = sum(float(a[n, kk, i, j]) for i in range(h) for j in range(w))
            wk = 0.0
            for i in range(h):
                for j in range(w):
                    gij, aij = float(g[n, kk, i, j]), float(a[n, kk, i, j])
                    if method == "gradcam":
                        wk += gij / (h * w)
                    elif method == "gradcam_pp":
                        den = 2 * gij**2 + total * gij**3
                        wk += (gij**2 / den if den != 0 else 0.0) * max(gij, 0.0)
                    elif method == "xgradcam":
                        wk += (aij / total if total != 0 else 0.0) * gij
            weights.append(wk)
        for i in range(h):
            for j in range(w):
                if method == "layercam":
                    s = sum(max(float(g[n, kk, i, j]), 0.0) * float(a[n, kk, i, j]) for kk in range(k))
                else:
                    s = sum(weights[kk] * float(a[n, kk, i, j]) for kk in range(k))
                out[n, i, j] = max(s, 0.0)
    return out


def loop_cam(a, weight, classes):
    b, k, h, w = a.shape
    weight = weight.detach()
    return torch.tensor([[[sum(float(weight[classes[n], kk]) * float(a[n, kk, i, j]) for kk in range(k))
                           for j in range(w)] for i in range(h)] for n in range(b)], dtype=torch.float64)


@pytest.fixture
def gap_model():
    torch.manual_seed(0)
    return CAMClassifier(ConvBackbone(5), num_classes=4, pool="gap").eval()


def test_gradcam_equals_relu_cam_over_hw_for_gap_linear(gap_model):
    x = torch.randn(3, 3, 10, 8)
    classes = torch.tensor([0, 3, 1])
    a, g = full_model_gradients(gap_model, x, classes)  # independent of camlab.cam_methods
    h, w = a.shape[-2:]
    cam = loop_cam(a, gap_model.head.weight, classes)  # (B, h, w)
    assert (cam < 0).any() and (cam > 0).any()  # the ReLU matters in this example
    # The identity: Grad-CAM = ReLU(CAM) / (h w), first with the full-model gradients, then through compute_cams.
    torch.testing.assert_close(loop_maps(a, g, "gradcam"), torch.relu(cam) / (h * w), rtol=1e-6, atol=1e-9)
    for method in ("gradcam", "xgradcam"):  # XGrad-CAM obeys the same identity
        got = compute_cams(gap_model, a.float(), classes, method)
        torch.testing.assert_close(got.double(), torch.relu(cam) / (h * w), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(compute_cams(gap_model, a.float(), classes, "cam").double(), cam,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "gradcam_pp", "xgradcam", "layercam"])
def test_gradient_methods_match_loops_without_gap(method):
    """GMP (gradient only at each channel's max) and an MLP head (dense, spatially varying gradients)."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 6)
    classes = torch.tensor([2, 0])
    for model in (CAMClassifier(ConvBackbone(4), num_classes=3, pool="gmp").eval(), MLPHeadModel().eval()):
        a, g = full_model_gradients(model, x, classes)
        got = compute_cams(model, a.float(), classes, method)
        assert got.shape == (2, 4, 3) and torch.isfinite(got).all() and (got >= 0).all()
        torch.testing.assert_close(got.double(), loop_maps(a, g, method), rtol=1e-5, atol=1e-7)


def test_hand_worked_gmp_example():
    """A = two 2x2 channels, GMP, W[c] = (0.5, -1): dy/dA is W[c, k] at each channel's max, 0 elsewhere."""
    model = CAMClassifier(ConvBackbone(2), num_classes=2, pool="gmp").eval()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[0.5, -1.0], [1.0, 1.0]]))
    a = torch.tensor([[[[1.0, 2.0], [0.0, 3.0]], [[4.0, 0.0], [1.0, 1.0]]]])  # sums 6 and 6
    c = torch.tensor([0])
    # Grad-CAM: alpha = (0.5 / 4, -1 / 4); 0.125 A0 - 0.25 A1 = [[-0.875, 0.25], [-0.25, 0.125]] -> ReLU.
    torch.testing.assert_close(compute_cams(model, a, c, "gradcam"), torch.tensor([[[0.0, 0.25], [0.0, 0.125]]]))
    # Grad-CAM++: channel 0 alpha at its max = 0.25 / (2 * 0.25 + 6 * 0.125) = 0.2, w0 = 0.2 * ReLU(0.5) = 0.1;
    # channel 1 has a negative gradient, ReLU(g) = 0, w1 = 0. Map = 0.1 * A0.
    torch.testing.assert_close(compute_cams(model, a, c, "gradcam_pp"), torch.tensor([[[0.1, 0.2], [0.0, 0.3]]]))
    # LayerCAM: ReLU(g) * A = 0.5 * 3 at channel 0's max only.
    torch.testing.assert_close(compute_cams(model, a, c, "layercam"), torch.tensor([[[0.0, 0.0], [0.0, 1.5]]]))


def test_several_classes_and_inference_mode(gap_model):
    """(B, k) classes give (B, k, h, w), each slice equal to the one-class call; works on inference tensors."""
    with torch.inference_mode():  # as in Lightning's validation loop
        a = gap_model(torch.randn(2, 3, 8, 8))["features"]
        top = torch.tensor([[1, 3], [0, 2]])
        for method in METHODS:
            many = compute_cams(gap_model, a, top, method)
            assert many.shape == (2, 2, 4, 4)
            for j in range(2):
                torch.testing.assert_close(many[:, j], compute_cams(gap_model, a, top[:, j], method))


def test_bad_input_is_one_readable_error(gap_model):
    a = torch.rand(1, 5, 4, 4)
    with pytest.raises(ValueError, match=r"Unknown CAM method 'grad_cam'\. Available: cam, gradcam, gradcam_pp"):
        compute_cams(gap_model, a, torch.tensor([0]), "grad_cam")
    with pytest.raises(ValueError, match="Unknown CAM method 'nope'"):
        CAMLocalization(cam_method="nope")
    with pytest.raises(ValueError, match="overlay_format must be 'jpg' or 'png', got 'gif'"):
        CAMLocalization(overlay_format="gif")
    with pytest.raises(TypeError, match="CAM needs a linear classifier head.*Use a gradient method"):
        compute_cams(MLPHeadModel(), torch.rand(1, 4, 4, 3), torch.tensor([0]), "cam")


def compose_train(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.runtime.output_dir = "/tmp/camlab-config-test"
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def test_every_cam_method_config_reaches_the_callback():
    from pathlib import Path

    names = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "cam_method").glob("*.yaml"))
    assert {"cam", "gradcam", "gradcam_pp"} <= set(names) and set(names) <= set(METHODS)
    assert compose_train([]).callbacks.cam_localization.cam_method == "cam"
    for name in names:
        cb = instantiate(compose_train([f"cam_method={name}"]).callbacks.cam_localization)
        assert cb.cam_method == name


def test_callback_fast_dev_run_with_gradcam_on_gmp(tmp_path):
    """The real configs (pool=gmp, cam_method=gradcam) through a fast_dev_run: val/loc/* are logged and the
    model's linear-CAM method is never used (metrics and overlays both go through Grad-CAM)."""
    cfg = compose_train(["cam_method=gradcam", "pool=gmp", "backbone.width=4", "data.image_size=32",
                         "data.num_train=8", "data.num_val=8", "data.num_test=8", "data.batch_size=8",
                         f"callbacks.cam_localization.output_dir={tmp_path}"])
    dm = instantiate(cfg.data, _convert_="partial")
    model = instantiate(cfg.model, _convert_="partial")
    model.cam = lambda *args: pytest.fail("cam_method=gradcam must not call model.cam")
    cb = instantiate(cfg.callbacks.cam_localization)
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, callbacks=[cb],
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/loc/")}
    for key in ("val/loc/gt_known_loc", "val/loc/top1_loc", "val/loc/MaxBoxAccV2", "val/loc/PxAP"):
        assert 0.0 <= logged[key] <= 100.0
    assert (tmp_path / "overlay_latest.jpg").is_file()
