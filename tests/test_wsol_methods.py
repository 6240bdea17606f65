"""WSOL training methods (camlab.methods, the `wsol` config group): each mechanism against a hand-worked example or
a plain loop written here, the set-up errors, the configs, and every method training under debug=fast (in-process).
Resume and DDP runs with the methods are in test_resume.py and test_ddp_train.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from _tiny_checkpoint import composed
from camlab.errors import ConfigError
from camlab.methods import METHODS, build_method
from camlab.methods.base import step_seed
from camlab.methods.data_side import cutmix, cutmix_box, hidden_cells, hide_and_seek, sample_cutmix
from camlab.methods.adl import adl
from camlab.methods.spg import masked_bce, spg_mask
from camlab.models import CAMClassifier
from camlab.models.backbones import create_backbone
from camlab.runtime.app import describe_error, run_app

NO_TRAINER = pytest.mark.filterwarnings("ignore:You are trying to `self.log")


@pytest.fixture
def one_thread():
    """Tiny tensors and tiny runs: one intra-op thread (two threads on a busy 2-core machine spend more time
    synchronizing than computing: a tiny run took 10 times as long)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(wsol, classes: int = 3) -> CAMClassifier:
    torch.manual_seed(0)
    return CAMClassifier(create_backbone("tiny_cnn", width=4), num_classes=classes, wsol=wsol)


def batch(n: int = 4, side: int = 16, classes: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(n, 3, side, side, generator=g), "label": torch.arange(n) % classes}


def minmax(m: torch.Tensor) -> torch.Tensor:
    return (m - m.min()) / (m.max() - m.min())


# ---- Hide-and-Seek ---------------------------------------------------------------------------------------------
def test_has_hides_exactly_the_chosen_cells_cut_short_at_the_borders():
    images = torch.randn(2, 3, 10, 7)
    hidden = torch.rand(2, 4, 3) < 0.5  # cells of 3 px: ceil(10 / 3) x ceil(7 / 3)
    out = hide_and_seek(images, hidden, 3)
    for b in range(2):
        for y in range(10):
            for x in range(7):
                want = torch.zeros(3) if hidden[b, y // 3, x // 3] else images[b, :, y, x]
                assert torch.equal(out[b, :, y, x], want), (b, y, x)


def test_has_hides_each_cell_at_the_drop_rate():
    g = torch.Generator().manual_seed(0)
    assert hidden_cells(100, 32, 30, 4, 0.3, g).shape == (100, 8, 8)
    assert not hidden_cells(100, 32, 32, 4, 0.0, g).any() and hidden_cells(100, 32, 32, 4, 1.0, g).all()
    cells = hidden_cells(100, 32, 32, 4, 0.3, g)
    assert abs(cells.float().mean().item() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / cells.numel())
    assert not torch.equal(cells[0], cells[1])  # drawn per image


@NO_TRAINER
def test_has_changes_the_training_batch_only_with_the_seed_of_its_step_and_rank(one_thread):
    model = tiny({"name": "has", "grid_size": 4, "drop_rate": 0.5, "seed": 7})
    seen = []
    model.backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    b = batch()
    model.train()
    model.training_step(b, 3)
    g = torch.Generator().manual_seed(step_seed(7, 0, 0, 3))  # rank 0, epoch 0, batch 3
    hidden = torch.rand((4, 4, 4), generator=g) < 0.5
    want = b["image"].clone()
    for i, r, c in hidden.nonzero().tolist():
        want[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 0.0
    assert torch.equal(seen[-1], want) and 0 < hidden.sum() < hidden.numel()
    model.eval()
    model.validation_step(b, 3)
    assert torch.equal(seen[-1], b["image"])  # validation sees the images as they are


# ---- CutMix ----------------------------------------------------------------------------------------------------
def test_cutmix_box_by_area_and_clipped_at_the_border():
    # lam 0.64: cut ratio sqrt(0.36) = 0.6, a 6 x 4 cut (int(10 * 0.6), int(8 * 0.6)); half-sides 3 and 2
    assert cutmix_box(10, 8, 0.64, 5, 4) == (2, 8, 2, 6)
    assert cutmix_box(10, 8, 0.64, 9, 0) == (6, 10, 0, 2)  # rows 6..12 and columns -2..2, clipped


def test_cutmix_pastes_the_box_and_mixes_labels_by_its_clipped_area():
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 10, 8).clone()  # image i is all i
    labels, perm = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 0, 3, 1])
    mixed, labels_b, lam = cutmix(images, labels, perm, (6, 10, 0, 2))
    for i in range(4):
        inside = torch.zeros(10, 8, dtype=torch.bool)
        inside[6:10, 0:2] = True
        assert (mixed[i, 0][inside] == perm[i]).all() and (mixed[i, 0][~inside] == i).all()
    assert labels_b.tolist() == [2, 0, 0, 1] and lam == pytest.approx(1 - 8 / 80)


def test_cutmix_mixes_at_its_probability():
    rng = np.random.default_rng(0)
    assert all(sample_cutmix(rng, 4, 8, 8, 1.0, 0.0) is None for _ in range(50))
    assert all(sample_cutmix(rng, 4, 8, 8, 1.0, 1.0) is not None for _ in range(50))
    mixed = sum(sample_cutmix(rng, 4, 8, 8, 1.0, 0.5) is not None for _ in range(400))
    assert abs(mixed - 200) < 4 * 10  # binomial(400, 0.5): sd 10


def test_cutmix_loss_is_lam_ce_a_plus_one_minus_lam_ce_b(one_thread):
    model = tiny({"name": "cutmix", "seed": 3})
    b = batch(6)
    model.train()
    rng = model.step_random(2, torch.device("cpu"))
    loss, logits = model.wsol_method.training_loss(model, b["image"], b["label"], rng)
    perm, (y1, y2, x1, x2) = sample_cutmix(np.random.default_rng(rng.seed), 6, 16, 16, 1.0, 1.0)  # the same draw
    mixed = b["image"].clone()
    mixed[:, :, y1:y2, x1:x2] = b["image"][perm][:, :, y1:y2, x1:x2]
    lam = 1 - (y2 - y1) * (x2 - x1) / 256
    want_logits = model(mixed)["logits"]
    want = lam * F.cross_entropy(want_logits, b["label"]) + (1 - lam) * F.cross_entropy(want_logits, b["label"][perm])
    assert 0 < lam < 1 and torch.equal(logits, want_logits) and torch.allclose(loss, want, rtol=1e-6, atol=0)


# ---- ADL -------------------------------------------------------------------------------------------------------
def test_adl_drop_mask_and_importance_map_from_the_attention_formula():
    f = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    drop, imp = torch.empty_like(f), torch.empty_like(f)
    for b in range(2):
        att = [[sum(f[b, c, i, j].item() for c in range(3)) / 3 for j in range(5)] for i in range(4)]
        peak = max(max(row) for row in att)
        for i in range(4):
            for j in range(5):
                drop[b, :, i, j] = f[b, :, i, j] * (1.0 if att[i][j] < 0.9 * peak else 0.0)
                imp[b, :, i, j] = f[b, :, i, j] / (1 + math.exp(-att[i][j]))
    assert torch.allclose(adl(f, 0.75, 0.9, u=0.5), drop, rtol=1e-12, atol=1e-12)  # u < drop_rate: drop mask
    assert torch.allclose(adl(f, 0.75, 0.9, u=0.8), imp, rtol=1e-12, atol=1e-12)  # else: importance map
    assert (drop == 0).any() and (drop != 0).any()


@NO_TRAINER
def test_adl_picks_the_drop_mask_at_its_rate_in_training_and_is_the_identity_at_eval(one_thread):
    model = tiny({"name": "adl", "drop_rate": 0.75, "drop_threshold": 0.9, "seed": 0})
    block, after = model.backbone.get_submodule("features.9"), model.backbone.get_submodule("features.10")
    raw, fed = [], []
    block.register_forward_hook(lambda m, i, o: raw.append(o.clone()), prepend=True)  # before ADL's hook
    after.register_forward_pre_hook(lambda m, args: fed.append(args[0].clone()))
    b = batch(2, side=8)
    model.train()
    drops, steps = 0, 60
    for step in range(steps):
        model.training_step(b, step)
        att = raw[-1].mean(dim=1, keepdim=True)
        drop = raw[-1] * (att < 0.9 * att.amax(dim=(2, 3), keepdim=True))
        imp = raw[-1] * torch.sigmoid(att)
        assert torch.equal(fed[-1], drop) or torch.equal(fed[-1], imp), step
        drops += torch.equal(fed[-1], drop) and not torch.equal(drop, imp)
    assert abs(drops / steps - 0.75) < 4 * math.sqrt(0.75 * 0.25 / steps)  # not 0.25: the choice is not inverted
    model.eval()
    with torch.no_grad():
        model(b["image"])
    assert torch.equal(fed[-1], raw[-1])  # identity at evaluation


# ---- ACoL ------------------------------------------------------------------------------------------------------
def test_acol_branch_b_sees_the_features_erased_where_branch_a_is_above_its_threshold():
    model = tiny({"name": "acol", "erase_threshold": 0.7})
    b = batch()
    model.train()
    loss, logits = model.wsol_method.training_loss(model, b["image"], b["label"], None)
    out = model(b["image"])  # train mode again: the same batch statistics, the same features
    a, wa = out["features"].double(), model.head.weight.double()
    wb, bb = model.wsol_method.head_b.weight.double(), model.wsol_method.head_b.bias.double()
    logits_b, erased = [], 0
    for i, y in enumerate(b["label"].tolist()):
        cam = minmax((wa[y].view(-1, 1, 1) * a[i]).sum(0))  # (h, w)
        keep = (cam < 0.7).double()
        erased += int((keep == 0).sum())
        logits_b.append(wb @ (a[i] * keep).mean(dim=(1, 2)) + bb)
    want = F.cross_entropy(logits.double(), b["label"]) + F.cross_entropy(torch.stack(logits_b), b["label"])
    assert torch.allclose(loss.double(), want, rtol=1e-5, atol=0) and torch.equal(logits, out["logits"])
    assert 0 < erased < a[:, 0].numel()


def test_acol_scores_the_fusion_of_both_branches_from_one_forward_pass():
    model = tiny({"name": "acol", "erase_threshold": 0.7}).eval()
    b = batch()
    with torch.no_grad():
        a = model(b["image"])["features"]
        classes = torch.tensor([[0, 2], [1, 0], [2, 1], [0, 1]])
        got = model.cam(a, classes)
    wa, wb = model.head.weight, model.wsol_method.head_b.weight
    for i in range(4):
        for j, c in enumerate(classes[i].tolist()):
            map_a = minmax((wa[c].view(-1, 1, 1) * a[i]).sum(0))
            erased = a[i] * (map_a < 0.7)  # branch B's input: the features with branch A's region erased
            map_b = minmax((wb[c].view(-1, 1, 1) * erased).sum(0))
            assert torch.allclose(got[i, j], torch.maximum(map_a, map_b), atol=1e-6), (i, j)
    model.wsol_method.fuse = False
    assert torch.equal(model.cam(a, classes[:, 0]), torch.einsum("bkhw,bk->bhw", a, wa[classes[:, 0]]))


# ---- SPG -------------------------------------------------------------------------------------------------------
def _spg_mask_loop(att: torch.Tensor, high: float, low: float, min_fg: int):
    """wsolevaluation's get_mask, pixel by pixel: 255 = ignored."""
    out = torch.full_like(att, 255.0)
    for b in range(att.shape[0]):
        thr = high if int((att[b] > high).sum()) >= min_fg else 0.7 * float(att[b].max())
        for y in range(att.shape[1]):
            for x in range(att.shape[2]):
                v = float(att[b, y, x])
                out[b, y, x] = 0.0 if v < low else (1.0 if v > thr else 255.0)
    return out


def test_spg_masks_from_its_thresholds_with_the_minimum_foreground_fallback():
    att = torch.tensor([[[0.0, 0.2, 0.45], [0.6, 0.65, 0.8]],  # two pixels > 0.5: enough
                        [[0.0, 0.02, 0.1], [0.2, 0.3, 0.4]]])  # none > 0.5: those > 0.7 * 0.4 instead
    target, valid = spg_mask(att, 0.5, 0.05, min_foreground=2)
    want = _spg_mask_loop(att, 0.5, 0.05, 2)
    assert want.tolist() == [[[0, 255, 255], [1, 1, 1]], [[0, 0, 255], [255, 1, 1]]]  # hand-worked
    assert valid.tolist() == (want != 255).tolist() and target[valid].tolist() == want[want != 255].tolist()
    z = torch.tensor([0.3, -1.2, 2.0])
    t, v = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([True, True, False])
    manual = -(math.log(1 / (1 + math.exp(-0.3))) + math.log(1 - 1 / (1 + math.exp(1.2)))) / 2
    assert masked_bce(z, t, v).item() == pytest.approx(manual, rel=1e-6)
    assert masked_bce(z, t, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_spg_loss_is_ce_plus_three_masked_losses_of_its_heads_and_no_head_runs_at_eval(one_thread):
    model = tiny({"name": "spg"})
    spg = model.wsol_method
    assert spg.blocks == ["features.6", "features.9"]
    assert (spg.b1a[0].in_channels, spg.b2a[0].in_channels, spg.keys["hidden_channels"]) == (8, 16, 16)
    taps = {}
    for name in spg.blocks:
        model.backbone.get_submodule(name).register_forward_hook(lambda m, i, o, n=name: taps.__setitem__(n, o))
    calls = []
    spg.shared.register_forward_hook(lambda m, i, o: calls.append(1))
    b = batch(2)
    model.train()
    loss, logits = spg.training_loss(model, b["image"], b["label"], None)
    assert len(calls) == 2  # B1 and B2 share it
    with torch.no_grad():
        out = model(b["image"])
        up = lambda m: F.interpolate(m, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]  # noqa: E731
        b1 = up(spg.shared(spg.b1a(taps["features.6"])))
        b2 = up(spg.shared(spg.b2a(taps["features.9"])))
        c = up(spg.head_c(out["features"]))
        cams = torch.stack([(model.head.weight[y].view(-1, 1, 1) * out["features"][i]).sum(0)
                            for i, y in enumerate(b["label"].tolist())])
        att = torch.stack([minmax(m) for m in up(cams.unsqueeze(1))])
        want = F.cross_entropy(out["logits"], b["label"])
        for head, source, (hi, lo) in ((b2, att, (0.7, 0.01)), (b1, torch.sigmoid(b2), (0.5, 0.05)),
                                       (c, (torch.sigmoid(b1) + torch.sigmoid(b2)) / 2, (0.7, 0.1))):
            mask = _spg_mask_loop(source, hi, lo, 30)
            sel = mask != 255
            want = want + F.binary_cross_entropy_with_logits(head[sel], mask[sel])
    assert torch.allclose(loss, want, rtol=1e-5, atol=0)
    loss.backward()
    for name, p in spg.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name  # every head is trained
    model.eval()
    before = len(calls)
    with torch.no_grad():
        model(b["image"])
    assert len(calls) == before  # no auxiliary head at evaluation


# ---- set-up errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, key", [
    ({"name": "has", "grid_size": 0}, "wsol.grid_size"),
    ({"name": "has", "drop_rate": 1.5}, "wsol.drop_rate"),
    ({"name": "adl", "drop_rate": -0.1}, "wsol.drop_rate"),
    ({"name": "adl", "drop_threshold": 2}, "wsol.drop_threshold"),
    ({"name": "adl", "blocks": ["layer3"]}, "wsol.blocks"),
    ({"name": "spg", "blocks": ["features.6"]}, "wsol.blocks"),
    ({"name": "spg", "blocks": ["features.1", "features.9"]}, "wsol.blocks"),  # overwritten by an in-place ReLU
    ({"name": "spg", "threshold_2l": -1}, "wsol.threshold_2l"),
    ({"name": "cutmix", "beta": 0}, "wsol.beta"),
    ({"name": "cutmix", "prob": 2}, "wsol.prob"),
    ({"name": "acol", "erase_threshold": 1.5}, "wsol.erase_threshold"),
    ({"name": "hide_and_seek"}, "wsol.name"),
    ({"name": "has", "drop": 0.5}, "wsol.drop"),
])
def test_bad_values_fail_at_set_up_with_one_line_naming_the_key(spec, key):
    with pytest.raises(ConfigError) as err:
        tiny(spec)
    message = str(err.value)
    assert "\n" not in message and key in message and err.value.settings == (key,), message


def test_an_unknown_block_from_the_command_line_is_one_line_naming_wsol_blocks(tmp_path):
    cfg = composed("train", ["wsol=adl", "wsol.blocks=[layer3]"], tmp_path)
    with pytest.raises(Exception) as err:  # noqa: PT011 - Hydra wraps the ConfigError of the model it builds
        instantiate(cfg.model, _convert_="partial")
    line = describe_error(err.value, cfg)
    assert line.startswith("wsol.blocks: backbone TinyCNN has no block 'layer3'; its blocks: features, features.0")
    assert line.endswith("(config key 'wsol.blocks')")
    with pytest.raises(SystemExit, match="^camlab: error: wsol.blocks: "):
        run_app("camlab.train", lambda c: instantiate(c.model, _convert_="partial"), cfg)


# ---- configs and training --------------------------------------------------------------------------------------
def test_every_wsol_option_composes_builds_and_records_its_method(tmp_path):
    options = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "wsol").glob("*.yaml"))
    assert options == sorted(METHODS)
    for name in options:
        cfg = composed("train", [f"wsol={name}", "seed=5"], tmp_path)
        model = instantiate(cfg.model, _convert_="partial")
        spec = model.hparams["wsol"]
        assert spec["name"] == name and build_method(spec).spec() == spec  # what a checkpoint rebuilds
        assert spec.get("seed", 5) == 5  # the run's seed drives the methods that draw
    cfg = composed("eval", ["wsol=acol"], tmp_path)
    assert instantiate(cfg.model, _convert_="partial").wsol_method.name == "acol"


FAST = ["debug=fast", "data.image_size=32", "data.num_train=32", "data.num_val=16", "data.num_test=16",
        "data.batch_size=16", "backbone.width=4", "test=false", "logger=[]", "callbacks.lr_monitor=null",
        "callbacks.rich_progress_bar=null", "callbacks.cam_localization.num_overlays=0",
        "callbacks.cam_localization.write_curves=false"]


@pytest.mark.parametrize("method", ["has", "cutmix", "adl", "acol", "spg"])
def test_each_method_trains_under_debug_fast(method, tmp_path, one_thread):
    from camlab.train import train

    metrics = train(composed("train", [*FAST, f"wsol={method}"], tmp_path))
    assert math.isfinite(metrics["train/loss"]) and "val/loc/MaxBoxAccV2" in metrics, metrics


# ---- timm backbones ---------------------------------------------------------------------------------------------
def test_timm_cnn_default_blocks_are_timm_feature_levels_and_vits_are_refused_in_one_line():
    from camlab.methods.blocks import check_blocks, default_blocks

    cnn = create_backbone("timm", model_name="resnet18")
    assert default_blocks(cnn, "adl") == ["model.layer3", "model.layer4"]  # the last two of timm's feature levels
    assert default_blocks(cnn, "spg") == ["model.layer2", "model.layer3"]
    assert check_blocks(cnn, default_blocks(cnn, "adl")) == [256, 512]  # real (B, C, h, w) maps
    vit = create_backbone("timm", model_name="vit_tiny_patch16_224")
    for method in ("adl", "spg"):
        with pytest.raises(ConfigError) as err:
            default_blocks(vit, method)
        message = str(err.value)
        assert "\n" not in message and err.value.settings == ("wsol.name",), message
        assert f"wsol={method} needs (B, C, h, w) feature maps" in message and "patch tokens" in message


def test_has_cells_as_large_as_the_input_are_warned_once(caplog, one_thread):
    model = tiny({"name": "has", "grid_size": 64, "drop_rate": 0.5})
    b = batch()
    model.train()
    with caplog.at_level("WARNING", logger="camlab.methods"):
        model.training_step(b, 0)
        model.training_step(b, 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "camlab.methods"]
    assert len(lines) == 1 and lines[0].startswith("wsol.grid_size=64 is not smaller than the 16 x 16 training input")
    caplog.clear()
    small = tiny({"name": "has", "grid_size": 4, "drop_rate": 0.5})
    small.train()
    with caplog.at_level("WARNING", logger="camlab.methods"):
        small.training_step(b, 0)
    assert not [r for r in caplog.records if r.name == "camlab.methods"]
