"""CAM methods: the GAP + linear identities through an independent full-model backward pass; every gradient method
for one and for every class against plain per-channel, per-pixel loops (GAP, GMP and an MLP head); Ablation-CAM's
closed form and general path, Score-CAM's batched path, EigenCAM's sign convention and Smooth Grad-CAM++ against
loops of their own; inference mode; method options from the configs; the callback in a fast_dev_run; readable
errors."""

from __future__ import annotations

import math

import lightning.pytorch as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict, read_write
from torch import nn

import camlab.cam_gradients
from camlab.callbacks import CAMLocalization
from camlab.cam_methods import METHODS, check_options, compute_cams
from camlab.errors import ConfigError
from camlab.models import CAMClassifier
from camlab.runtime.app import describe_error

GRADIENT = ["gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "gradcam_elementwise"]


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


class HeadForward(nn.Module):
    """A pooled + linear model seen only through ``head_forward``: the general (non-closed-form) paths."""

    def __init__(self, model: CAMClassifier) -> None:
        super().__init__()
        self.inner = model

    def head_forward(self, features):
        return self.inner.head(self.inner.pooled(features))

    def forward(self, x):
        return self.inner(x)


def head(model, features):
    """The logits the part of the network after the features gives (written here, not camlab's helper)."""
    if hasattr(model, "head_forward"):
        return model.head_forward(features)
    return model.head(model.pooled(features))


def full_model_gradients(model, x, classes):
    """dy^c/dA by one backward pass through the WHOLE model (backbone included), no head re-run, no hooks."""
    out = model(x)
    a = out["features"]
    a.retain_grad()
    out["logits"].gather(1, classes.view(-1, 1)).sum().backward()
    return a.detach().double(), a.grad.detach().double()


def loop_maps(a, g, method):
    """The gradient methods written channel by channel, pixel by pixel, in Python floats."""
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
                gs, as_ = [float(g[n, kk, i, j]) for kk in range(k)], [float(a[n, kk, i, j]) for kk in range(k)]
                if method == "layercam":
                    s = sum(max(gk, 0.0) * ak for gk, ak in zip(gs, as_))
                elif method == "hirescam":
                    s = sum(gk * ak for gk, ak in zip(gs, as_))
                elif method == "gradcam_elementwise":
                    s = sum(max(gk * ak, 0.0) for gk, ak in zip(gs, as_))
                else:
                    s = sum(weights[kk] * as_[kk] for kk in range(k))
                out[n, i, j] = s if method == "hirescam" else max(s, 0.0)
    return out


def loop_cam(a, weight, classes):
    b, k, h, w = a.shape
    weight = weight.detach()
    return torch.tensor([[[sum(float(weight[classes[n], kk]) * float(a[n, kk, i, j]) for kk in range(k))
                           for j in range(w)] for i in range(h)] for n in range(b)], dtype=torch.float64)


def weighted(a, n, weights):
    """ReLU(sum_k w_k A^k) of image n, pixel by pixel."""
    k, h, w = a.shape[1:]
    return torch.tensor([[max(sum(weights[kk] * float(a[n, kk, i, j]) for kk in range(k)), 0.0) for j in range(w)]
                         for i in range(h)], dtype=torch.float64)


@pytest.fixture
def gap_model():
    torch.manual_seed(0)
    return CAMClassifier(ConvBackbone(5), num_classes=4, pool="gap").eval()


def models_without_gap():
    torch.manual_seed(1)
    return [CAMClassifier(ConvBackbone(4), num_classes=3, pool="gmp").eval(), MLPHeadModel().eval()]


def test_gap_linear_identities_through_a_full_model_backward(gap_model):
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
    torch.testing.assert_close(compute_cams(gap_model, a.float(), classes, "hirescam").double(), cam / (h * w),
                               rtol=1e-5, atol=1e-7)  # HiResCAM = CAM / (h w), signed
    torch.testing.assert_close(compute_cams(gap_model, a.float(), classes, "cam").double(), cam,
                               rtol=1e-5, atol=1e-6)


def test_gradient_methods_match_loops_for_one_and_every_class(monkeypatch):
    """GAP, GMP (gradient only at each channel's max) and an MLP head (dense, spatially varying gradients); one
    class per image, then every class, the MLP's per-class gradients one class per chunk."""
    monkeypatch.setattr(camlab.cam_gradients, "CHUNK_BYTES", 1)
    torch.manual_seed(0)
    models = [CAMClassifier(ConvBackbone(5), num_classes=4, pool="gap").eval(), *models_without_gap()]
    x = torch.randn(2, 3, 8, 6)
    for model in models:
        with torch.no_grad():
            c = model(x)["logits"].shape[1]
        every = torch.stack([torch.arange(c), torch.arange(c).flip(0)])  # (2, C)
        grads = [full_model_gradients(model, x, every[:, j]) for j in range(c)]
        a = grads[0][0]
        for method in GRADIENT:
            refs = torch.stack([loop_maps(a, g, method) for _, g in grads], dim=1)  # (2, C, h, w)
            got = compute_cams(model, a.float(), every, method)
            assert got.shape == (2, c, 4, 3) and torch.isfinite(got).all()
            assert (got >= 0).all() or method == "hirescam"
            torch.testing.assert_close(got.double(), refs, rtol=1e-5, atol=1e-7, msg=method)
            torch.testing.assert_close(compute_cams(model, a.float(), every[:, 0], method).double(), refs[:, 0],
                                       rtol=1e-5, atol=1e-7, msg=method)


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
    # HiResCAM: g * A summed = 0.5 * 3 at (1, 1), -1 * 4 at (0, 0); element-wise Grad-CAM drops the negative one.
    torch.testing.assert_close(compute_cams(model, a, c, "hirescam"), torch.tensor([[[-4.0, 0.0], [0.0, 1.5]]]))
    torch.testing.assert_close(compute_cams(model, a, c, "gradcam_elementwise"),
                               torch.tensor([[[0.0, 0.0], [0.0, 1.5]]]))
    # Ablation-CAM: y = 0.5 * 3 - 4 + b; zeroing channel 0 drops 1.5, channel 1 drops -4: w = (1.5, -4) / y.
    y = 1.5 - 4.0 + float(model.head.bias.detach()[0])
    want = torch.relu((1.5 * a[0, 0] - 4.0 * a[0, 1]) / y).unsqueeze(0)
    torch.testing.assert_close(compute_cams(model, a, c, "ablationcam"), want)


def loop_ablation(model, a, classes):
    """(y^c - y^c with channel k zeroed) / y^c, one ablated copy and one head pass at a time."""
    b, k, h, w = a.shape
    out = torch.zeros(b, classes.shape[1], h, w, dtype=torch.float64)
    with torch.no_grad():
        for n in range(b):
            for j, c in enumerate(classes[n].tolist()):
                y = float(head(model, a[n:n + 1])[0, c])
                weights = []
                for kk in range(k):
                    x = a[n:n + 1].clone()
                    x[0, kk] = 0.0
                    weights.append((y - float(head(model, x)[0, c])) / y)
                out[n, j] = weighted(a, n, weights)
    return out


def test_ablationcam_closed_form_equals_the_general_path_and_a_loop(gap_model):
    x = torch.randn(3, 3, 10, 8)
    classes = torch.tensor([[0, 3], [1, 2], [2, 0]])
    with torch.no_grad():
        a = gap_model(x)["features"]
    ref = loop_ablation(gap_model, a, classes)
    closed = compute_cams(gap_model, a, classes, "ablationcam")  # W[c, k] mean(A^k) / y^c, no extra pass
    general = compute_cams(HeadForward(gap_model), a, classes, "ablationcam", options={"batch_size": 4})
    assert (ref > 0).any() and (ref == 0).any()
    torch.testing.assert_close(closed.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(general, closed, rtol=1e-5, atol=1e-6)
    for model in models_without_gap():  # GMP's closed form, the MLP head's general path
        with torch.no_grad():
            a = model(x[:2, :, :8, :6])["features"]
        got = compute_cams(model, a, classes[:2] % 3, "ablationcam", options={"batch_size": 3})
        torch.testing.assert_close(got.double(), loop_ablation(model, a, classes[:2] % 3), rtol=1e-5, atol=1e-6)


def loop_scorecam(model, a, x, classes):
    """Each channel's map upsampled, min-max normalized, masking the input, scored one image at a time."""
    b, k, h, w = a.shape
    out = torch.zeros(b, classes.shape[1], h, w, dtype=torch.float64)
    with torch.no_grad():
        for n in range(b):
            for j, c in enumerate(classes[n].tolist()):
                scores = []
                for kk in range(k):
                    m = F.interpolate(a[n, kk][None, None], size=x.shape[-2:], mode="bilinear",
                                      align_corners=False)[0, 0]
                    lo, hi = float(m.min()), float(m.max())
                    m = (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)
                    scores.append(float(model(x[n:n + 1] * m)["logits"][0, c]))
                top = max(scores)
                e = [math.exp(s - top) for s in scores]
                out[n, j] = weighted(a, n, [v / sum(e) for v in e])
    return out


def test_scorecam_batched_equals_a_one_channel_at_a_time_loop():
    torch.manual_seed(3)
    model = CAMClassifier(ConvBackbone(6), num_classes=3, pool="gap").eval()
    with torch.no_grad():  # channel 1 never fires: its constant map gives the all-zero mask
        model.backbone.conv.weight[1] = 0.0
        model.backbone.conv.bias[1] = -1.0
    x = torch.randn(3, 3, 12, 10)
    classes = torch.tensor([[0, 2], [1, 0], [2, 1]])
    with torch.inference_mode():  # as in the validation loop
        a = model(x)["features"]
    got = compute_cams(model, a, classes, "scorecam", images=x, options={"batch_size": 4})  # chunks across images
    ref = loop_scorecam(model, a.clone(), x, classes)
    assert (a[:, 1] == 0).all() and got.shape == (3, 2, 6, 5)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    one = compute_cams(model, a, classes[:, 0], "scorecam", images=x, options={"batch_size": 64})
    torch.testing.assert_close(one.double(), ref[:, 0], rtol=1e-5, atol=1e-6)
    mlp = MLPHeadModel().eval()
    with torch.no_grad():
        a = mlp(x[:2, :, :8, :6])["features"]
    got = compute_cams(mlp, a, classes[:2], "scorecam", images=x[:2, :, :8, :6], options={"batch_size": 5})
    torch.testing.assert_close(got.double(), loop_scorecam(mlp, a, x[:2, :, :8, :6], classes[:2]),
                               rtol=1e-5, atol=1e-6)


def loop_eigencam(a):
    """numpy's SVD of each image's centred (hw, K) activations; the sign that correlates with the channel mean."""
    out = []
    for feats in a.double().numpy():
        x = feats.reshape(feats.shape[0], -1).T  # (hw, K)
        xc = x - x.mean(axis=0)
        p = xc @ np.linalg.svd(xc)[2][0]
        mean = x.mean(axis=1)  # the channel-mean activation at each position
        if float(np.dot(p, mean - mean.mean())) < 0:
            p = -p
        out.append(np.maximum(p, 0.0).reshape(feats.shape[1:]))
    return torch.from_numpy(np.stack(out))


def test_eigencam_is_the_first_principal_component_with_the_stated_sign():
    torch.manual_seed(4)
    for shape in ((3, 8, 7, 7), (2, 8, 2, 2)):  # hw > K and hw <= K (either Gram matrix)
        a = torch.relu(torch.randn(shape))
        got = compute_cams(nn.Module(), a, torch.zeros(shape[0], dtype=torch.long), "eigencam")
        torch.testing.assert_close(got.double(), loop_eigencam(a), rtol=1e-5, atol=1e-6)
    # A blob of strong activations on every channel: the map lights the blob, never the background, whatever sign
    # the decomposition returns; class-agnostic, so every class gets the same map.
    a = torch.rand(2, 6, 7, 7) * 0.1
    a[:, :, 2:4, 3:6] += torch.linspace(1.0, 2.0, 6).view(1, 6, 1, 1)
    got = compute_cams(nn.Module(), a, torch.tensor([[0, 1], [1, 0]]), "eigencam")
    assert torch.equal(got[:, 0], got[:, 1])
    inside = torch.zeros(7, 7, dtype=torch.bool)
    inside[2:4, 3:6] = True
    assert (got[:, 0][:, inside].amin(dim=1) > 0).all() and (got[:, 0][:, ~inside] == 0).all()


def loop_smoothgradcampp(model, x, classes, n_samples, sigma, seed):
    """Full-model gradients at each noisy input (the documented noise draws), averaged per pixel."""
    gen = torch.Generator().manual_seed(seed)
    grads = [full_model_gradients(model, x + sigma * torch.randn(x.shape, generator=gen), classes)[1]
             for _ in range(n_samples)]
    with torch.no_grad():
        a = model(x)["features"].double()
    b, k, h, w = a.shape
    out = torch.zeros(b, h, w, dtype=torch.float64)
    for n in range(b):
        weights = []
        for kk in range(k):
            total, wk = float(a[n, kk].sum()), 0.0
            for i in range(h):
                for j in range(w):
                    gs = [float(g[n, kk, i, j]) for g in grads]
                    d1, d2, d3 = (sum(v**p for v in gs) / n_samples for p in (1, 2, 3))
                    den = 2 * d2 + total * d3
                    wk += (d2 / den if den != 0 else 0.0) * max(d1, 0.0)
            weights.append(wk)
        out[n] = weighted(a, n, weights)
    return out


def test_smoothgradcampp_matches_a_loop_over_noisy_inputs(gap_model):
    x = torch.randn(2, 3, 8, 6)
    classes = torch.tensor([2, 0])
    opts = {"n_samples": 3, "sigma": 0.5, "seed": 7}
    for model in models_without_gap():
        with torch.no_grad():
            a = model(x)["features"]
        got = compute_cams(model, a, classes, "smoothgradcampp", images=x, options=opts)
        ref = loop_smoothgradcampp(model, x, classes, **opts)
        assert (ref > 0).any()
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-7)
        if isinstance(model, MLPHeadModel):  # its gradients depend on the input: the noise matters
            assert not torch.allclose(got, compute_cams(model, a, classes, "gradcam_pp"), rtol=1e-3, atol=1e-5)
    # GAP + linear: the gradients do not depend on the input, so the average is Grad-CAM++ exactly
    with torch.no_grad():
        a = gap_model(x)["features"]
    got = compute_cams(gap_model, a, classes, "smoothgradcampp", images=x, options=opts)
    torch.testing.assert_close(got.double(), loop_smoothgradcampp(gap_model, x, classes, **opts), rtol=1e-5,
                               atol=1e-7)
    torch.testing.assert_close(got, compute_cams(gap_model, a, classes, "gradcam_pp"))


def test_inference_mode_features_inside_and_after_leaving_it(gap_model):
    """Every method inside inference mode (Lightning's validation), and on its tensors after leaving it: CAM used
    to raise 'Inference tensors cannot be saved for backward' there."""
    x = torch.randn(2, 3, 8, 8)
    top = torch.tensor([[1, 3], [0, 2]])
    with torch.inference_mode():
        a = gap_model(x)["features"]
        inside = {m: compute_cams(gap_model, a, top, m, images=x) for m in METHODS}
    assert a.is_inference()
    ref = torch.stack([loop_cam(a, gap_model.head.weight, top[:, j]) for j in range(2)], dim=1)
    torch.testing.assert_close(compute_cams(gap_model, a, top, "cam").double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compute_cams(gap_model, a, top[:, 0]).double(), ref[:, 0], rtol=1e-5, atol=1e-6)
    for m in METHODS:
        after = compute_cams(gap_model, a, top, m, images=x)
        assert after.shape == (2, 2, 4, 4) and not after.requires_grad
        torch.testing.assert_close(after, inside[m])


def test_bad_input_is_one_readable_error(gap_model):
    a = torch.rand(1, 5, 4, 4)
    with pytest.raises(ValueError, match=r"Unknown CAM method 'grad_cam'\. Available: cam, gradcam, gradcam_pp"):
        compute_cams(gap_model, a, torch.tensor([0]), "grad_cam")
    with pytest.raises(ValueError, match="Unknown CAM method 'nope'"):
        CAMLocalization(cam_method="nope")
    with pytest.raises(ValueError, match="overlay_format must be 'jpg' or 'png', got 'gif'"):
        CAMLocalization(overlay_format="gif")
    with pytest.raises(TypeError, match="CAM needs a linear classifier head.*Use another method: gradcam"):
        compute_cams(MLPHeadModel(), torch.rand(1, 4, 4, 3), torch.tensor([0]), "cam")
    with pytest.raises(ValueError, match=r"cam_method=scorecam runs the model on the input images: pass "
                                         r"compute_cams\(\.\.\., images="):
        compute_cams(gap_model, a, torch.tensor([0]), "scorecam")
    with pytest.raises(ConfigError, match=r"cam_method=gradcam has no key batch_size \(its keys: none\)"):
        compute_cams(gap_model, a, torch.tensor([0]), "gradcam", options={"batch_size": 4})
    with pytest.raises(ConfigError, match=r"cam_method=scorecam has no key n_samples \(its keys: batch_size\)"):
        CAMLocalization(cam_method="scorecam", cam_options={"n_samples": 2})
    assert check_options("smoothgradcampp", {"sigma": 0}) == {"n_samples": 8, "sigma": 0.0, "seed": 0}


def compose_train(overrides, config="train"):
    return compose_many([overrides], config)[0]


def compose_many(override_lists, config="train"):
    """The app's configs (one Hydra initialization), the hydra node set as ``@hydra.main`` would."""
    GlobalHydra.instance().clear()
    cfgs = []
    with initialize_config_module("camlab.conf", version_base="1.3"):
        for overrides in override_lists:
            cfg = compose(config, overrides=overrides, return_hydra_config=True)
            with open_dict(cfg), read_write(cfg):
                cfg.hydra.runtime.output_dir = "/tmp/camlab-config-test"
            cfgs.append(cfg)
    HydraConfig.instance().set_config(cfgs[-1])
    return [OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) for cfg in cfgs]


def test_every_cam_method_config_and_its_keys_reach_the_callback():
    from pathlib import Path

    names = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "cam_method").glob("*.yaml"))
    assert set(names) == set(METHODS)
    bad = (("scorecam", "cam_method.batch_size=0",
            "cam_method.batch_size must be an integer >= 1 (masked images per forward pass), got 0"),
           ("ablationcam", "cam_method.batch_size=2.5", "cam_method.batch_size must be an integer"),
           ("smoothgradcampp", "cam_method.sigma=-0.1", "cam_method.sigma must be a number >= 0"),
           ("smoothgradcampp", "cam_method.n_samples=0", "cam_method.n_samples must be an integer"))
    cfgs = compose_many([[], *([f"cam_method={name}"] for name in names),
                         ["cam_method=scorecam", "cam_method.batch_size=7"],
                         *([f"cam_method={method}", key] for method, key, _ in bad)])
    assert cfgs[0].callbacks.cam_localization.cam_method == "cam"
    for name, cfg in zip(names, cfgs[1:]):
        cb = instantiate(cfg.callbacks.cam_localization)
        assert cb.cam_method == name and cb.cam_options == check_options(name)
    assert instantiate(cfgs[len(names) + 1].callbacks.cam_localization).cam_options == {"batch_size": 7}
    for (_, _, message), cfg in zip(bad, cfgs[len(names) + 2:]):
        with pytest.raises(Exception) as err:
            instantiate(cfg.callbacks.cam_localization)
        line = describe_error(err.value, cfg)
        assert line.startswith(message) and "\n" not in line, line
    (cfg,) = compose_many([["cam_method=smoothgradcampp", "cam_method.n_samples=2", "cam_method.sigma=0.1"]], "eval")
    assert instantiate(cfg.callbacks.cam_localization).cam_options == {"n_samples": 2, "sigma": 0.1, "seed": 0}


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
