"""backbone=timm: patch tokens on their grid, local weights only, clear errors; a timm ResNet and a timm ViT train,
evaluate and predict like the torchvision backbones, with the ViT's CAM checked against a plain loop over its tokens.

The contract itself (channels, stride, output_size, min_input_size, gradients) is in tests/test_backbones.py,
parametrized over timm models too.
"""

from __future__ import annotations

import csv
import json
import re
import socket

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from _tiny_checkpoint import DATA, composed
from camlab.data import SyntheticShapes
from camlab.errors import ConfigError
from camlab.models.backbones import create_backbone

TRAIN = ["trainer.max_epochs=1", "test=false", "callbacks=[model_checkpoint,cam_localization]",
         "callbacks.cam_localization.num_overlays=1", "callbacks.cam_localization.write_curves=false"]
# timm's own tiny test models (a 4-stage ResNet with 1 block per stage; a 6-block ViT, width 64, class token)
RESNET = ["backbone=timm", "backbone.model_name=test_resnet", "backbone.output_stride=16"]
VIT = ["backbone=timm", "backbone.model_name=test_vit", "data.image_size=48"]  # a 3×3 patch grid


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any connection or download attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("camlab tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    import huggingface_hub
    import timm.models._hub as timm_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(timm_hub, "hf_hub_download", refuse, raising=False)
    monkeypatch.setattr(timm_hub, "download_cached_file", refuse)


def grid_by_hand(tokens: torch.Tensor, prefix: int, h: int, w: int) -> torch.Tensor:
    """(N, L, K) tokens -> (N, K, h, w), one position at a time: token prefix + i * w + j is row i, column j."""
    out = torch.empty(tokens.shape[0], tokens.shape[2], h, w)
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = tokens[:, prefix + i * w + j, :]
    return out


# ---- tokens, weights, errors ------------------------------------------------------------------------------
def test_vit_patch_tokens_on_their_grid_with_class_and_register_tokens_dropped():
    torch.manual_seed(0)
    kwargs = {"depth": 1, "reg_tokens": 4}  # one block, class + 4 register tokens: 5 prefix tokens
    backbone = create_backbone("timm", model_name="vit_tiny_patch16_224", model_kwargs=kwargs).eval()
    assert (backbone.num_prefix_tokens, backbone.stride, backbone.min_input_size, backbone.num_features) == (5, 16, 16,
                                                                                                            192)
    for size in ((48, 80), (50, 70)):  # 50 × 70 is padded by timm to 64 × 80: ceil(H / 16) × ceil(W / 16)
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            tokens = backbone.model.forward_features(x)  # timm's own (N, 5 + h*w, 192)
            got = backbone(x)
        h, w = -(-size[0] // 16), -(-size[1] // 16)
        assert tokens.shape == (2, 5 + h * w, 192) and got.shape == (2, 192, h, w)
        torch.testing.assert_close(got, grid_by_hand(tokens, 5, h, w), rtol=0, atol=0)
    # a block's output, as a hook of a module-side WSOL method sees it: to_map lays it out, from_map puts it back
    assert backbone.feature_blocks == ("model.blocks.0",)
    seen = []
    handle = backbone.get_submodule("model.blocks.0").register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        backbone(torch.randn(1, 3, 48, 80))
    handle.remove()
    (out,) = seen
    grid = backbone.to_map(out, 3, 5)
    torch.testing.assert_close(grid, grid_by_hand(out, 5, 3, 5), rtol=0, atol=0)
    torch.testing.assert_close(backbone.from_map(grid, out), out, rtol=0, atol=0)
    assert torch.equal(backbone.from_map(grid * 0, out)[:, :5], out[:, :5])  # prefix tokens untouched


@pytest.mark.parametrize(("name", "kwargs", "blocks"), [
    ("test_resnet", {}, ("model.act1", "model.layer1", "model.layer2", "model.layer3", "model.layer4")),
    ("swin_tiny_patch4_window7_224", {"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 1]},
     ("model.layers.0", "model.layers.1")),  # NHWC stages
])
def test_feature_blocks_outputs_map_and_back(name, kwargs, blocks):
    backbone = create_backbone("timm", model_name=name, model_kwargs=kwargs).eval()
    assert backbone.feature_blocks == blocks
    seen = []
    handle = backbone.get_submodule(blocks[-1]).register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 96))
    handle.remove()
    (out,) = seen
    grid = backbone.to_map(out, *feats.shape[-2:])
    # by hand: channels are dim 1 of a PyTorch map, the last dim of an NHWC one
    by_hand = out if out.shape[1] == feats.shape[1] else torch.stack([out[..., k] for k in range(out.shape[-1])], 1)
    assert grid.shape == feats.shape and torch.equal(grid, by_hand)
    if name == "test_resnet":  # its last block is the features (Swin's features add a norm after it)
        assert torch.equal(grid, feats)
    assert torch.equal(backbone.from_map(grid, out), out)


@pytest.fixture(scope="module")
def timm_files(tmp_path_factory):
    """Random-init timm classifiers (their 1000-class heads included) saved as a .pth and a .safetensors file."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("timm_weights")
    torch.manual_seed(1)
    nets = {"test_resnet": timm.create_model("test_resnet", output_stride=16).eval(),
            "test_convnext": timm.create_model("test_convnext").eval(),
            "vit": timm.create_model("vit_tiny_patch16_224", depth=2, dynamic_img_size=True).eval()}
    for net in nets.values():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(nets["test_resnet"].state_dict(), folder / "test_resnet.pth")
    torch.save({"model": nets["test_convnext"].state_dict()}, folder / "test_convnext.pth")  # DeiT/ConvNeXt repo style
    save_file({k: v.contiguous() for k, v in nets["vit"].state_dict().items()}, str(folder / "vit.safetensors"))
    return folder, nets


def test_local_timm_weights_give_timms_own_features(timm_files):
    folder, nets = timm_files
    x = torch.randn(2, 3, 64, 80)
    resnet = create_backbone("timm", model_name="test_resnet", output_stride=16,
                             pretrained=str(folder / "test_resnet.pth"))
    overlay = {"file": str(folder / "test_convnext.pth")}  # timm's own way to name a local file
    convnext = create_backbone("timm", model_name="test_convnext", pretrained=True, pretrained_cfg_overlay=overlay)
    vit = create_backbone("timm", model_name="vit_tiny_patch16_224", model_kwargs={"depth": 2},
                          pretrained=folder / "vit.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(resnet.eval()(x), nets["test_resnet"].forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(convnext.eval()(x), nets["test_convnext"].forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(vit.eval()(x), grid_by_hand(nets["vit"].forward_features(x), 1, 4, 5),
                                   rtol=0, atol=0)
    # the heads' keys (fc, head.fc; ConvNeXt's post-pooling head.norm, removed from the trunk) were in the files
    assert "head.norm.weight" in nets["test_convnext"].state_dict()
    assert "model.head.norm.weight" not in convnext.state_dict()


def test_weights_of_another_model_name_the_file_and_the_keys(timm_files):
    folder, _ = timm_files
    path = folder / "vit.safetensors"  # a 2-block ViT-Tiny
    with pytest.raises(ValueError, match=re.escape(f"'{path}' does not fit backbone TimmBackbone: missing feature "
                                                   f"keys: model.blocks.2.norm1.weight")):
        create_backbone("timm", model_name="vit_tiny_patch16_224", model_kwargs={"depth": 3}, pretrained=path)
    with pytest.raises(ValueError, match=r"shape mismatch in model.blocks.0.attn.proj.bias: file \(192,\) vs model "
                                         r"\(384,\)"):
        create_backbone("timm", model_name="vit_small_patch16_224", model_kwargs={"depth": 2}, pretrained=path)
    with pytest.warns(UserWarning, match="missing feature keys: model.blocks.2"):
        create_backbone("timm", model_name="vit_tiny_patch16_224", model_kwargs={"depth": 3}, pretrained=path,
                        strict=False)


def test_pretrained_true_without_a_file_never_downloads(tmp_path):
    with pytest.raises(ConfigError) as err:
        create_backbone("timm", model_name="resnet18", pretrained=True)
    message = str(err.value)
    assert "\n" not in message and err.value.settings == ("pretrained",)
    assert "camlab never downloads" in message and "pretrained=<local file>" in message
    assert "timm/resnet18.a1_in1k" in message and "pretrained_cfg_overlay" in message
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ConfigError, match=f"timm weights file '{missing}' not found; camlab never downloads"):
        create_backbone("timm", model_name="resnet18", pretrained=str(missing))


def test_bad_names_and_options_are_one_line_naming_the_key():
    cases = [
        ({"model_name": "resnet5O"}, "model_name", r"unknown timm model_name 'resnet5O'; close matches: .*resnet50.*"
                                                    r"timm.list_models\('\*resnet5O\*'\)"),
        ({"model_name": "resnet18.nope"}, "model_name", r"no pretrained tag 'nope' \(its tags: a1_in1k, .*tv_in1k\)"),
        ({"model_name": "hf-hub:timm/resnet18.a1_in1k"}, "model_name", "registry models only and never downloads"),
        ({"model_name": "deit_tiny_patch16_224", "output_stride": 16}, "output_stride",
         "has no output_stride option .* set output_stride=null"),
        ({"model_name": "test_resnet", "output_stride": 12}, "output_stride", "does not support output_stride=12"),
        ({"model_name": "test_resnet", "model_kwargs": {"num_classes": 5}}, "model_kwargs", "model_kwargs.num_classes"),
        ({"model_name": "test_resnet", "model_kwargs": [0.1]}, "model_kwargs", r"model_kwargs must be a mapping"),
        ({"model_name": "cait_xxs24_224", "model_kwargs": {"depth": 1}}, "model_name",
         "not supported as a CAM backbone: it does not run on 64×80 inputs .*224×224"),
    ]
    for options, key, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as err:
            create_backbone("timm", **options)
        assert "\n" not in str(err.value) and err.value.settings == (key,), options


def test_the_app_names_the_config_key(tmp_path):
    from hydra.utils import instantiate

    from camlab.runtime.app import describe_error

    cfg = composed("train", [*DATA, "backbone=timm", "backbone.model_name=deit_tiny_patch16_224",
                             "backbone.output_stride=16"], tmp_path)
    with pytest.raises(Exception) as err:
        instantiate(cfg.model, _convert_="partial")
    line = describe_error(err.value, cfg)
    assert line is not None and "\n" not in line and "backbone.output_stride" in line, line


# ---- train, evaluate, predict -----------------------------------------------------------------------------
EVAL = ["split=val", "eval.save_cams=true", "callbacks=[cam_localization]", "callbacks.cam_localization.num_overlays=1",
        "callbacks.cam_localization.write_curves=false", "callbacks.cam_localization.faithfulness.stages=[]"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(kind)``: timm's test_resnet (stride 16, 32 px) or test_vit (48 px) trained one epoch in-process, then
    evaluated on val with its maps saved; each built once per module."""
    from camlab.eval import evaluate
    from camlab.train import train

    cache: dict[str, dict] = {}

    def get(kind: str) -> dict:
        if kind not in cache:
            overrides = RESNET if kind == "resnet" else VIT
            run_dir = tmp_path_factory.mktemp(f"train_{kind}")
            train(composed("train", [*DATA, *TRAIN, *overrides], run_dir))
            rows = [r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get("val/loc/MaxBoxAccV2")]
            (ckpt,) = (run_dir / "checkpoints").glob("best-*.ckpt")
            data = [o for o in overrides if o.startswith("data.")]
            out = tmp_path_factory.mktemp(f"eval_{kind}")
            summary = evaluate(composed("eval", [*DATA, *data, f"ckpt_path={ckpt}", *EVAL], out))
            cache[kind] = {"ckpt": ckpt, "size": 48 if data else 32, "eval_dir": out, "eval": summary["metrics"],
                           "val": {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v != ""}}
        return cache[kind]

    return get


def val_images(size: int, n: int) -> tuple[SyntheticShapes, torch.Tensor]:
    """The first ``n`` images of the val split the DATA overrides render (the same seed and settings)."""
    ds = SyntheticShapes("val", length=25, num_classes=5, image_size=size, seed=0, hflip=False)
    return ds, torch.stack([ds[i]["image"] for i in range(n)])


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_timm_trains_logs_every_loc_metric_and_eval_reproduces_them(runs, kind, trained):
    run = runs(kind)
    loc = sorted(k for k in trained["val"] if k.startswith("val/loc/"))  # what a tiny_cnn run logs
    assert loc and sorted(k for k in run["val"] if k.startswith("val/loc/")) == loc
    for key in [*loc, "val/acc"]:  # the backbone rebuilt from the checkpoint's stored config: the same numbers
        assert run["eval"][key] == pytest.approx(run["val"][key], rel=1e-6, abs=1e-9), key


def test_vit_cam_is_the_head_weights_on_timms_patch_tokens(runs):
    """The CAM camlab-eval writes (cams.npz ``cam_raw``, the GT class's map from the validation forward pass) equals
    sum_k W[c, k] A^k with A the patch tokens of timm's forward_features laid out on the 3×3 grid by hand."""
    from camlab.models.pretrained import load_checkpoint

    run = runs("vit")
    cams = np.load(run["eval_dir"] / "cams.npz")
    assert cams["index"][:4].tolist() == [0, 1, 2, 3] and cams["cam_raw"].shape[1:] == (3, 3)
    model = load_checkpoint(run["ckpt"])
    ds, images = val_images(48, 4)
    with torch.no_grad():
        tokens = model.backbone.model.forward_features(images)  # (4, 1 + 9, 64): class token first
    weight = model.head.weight.detach()  # (5, 64)
    for n in range(4):
        c = int(cams["label"][n])
        assert c == int(ds[n]["label"])
        by_hand = [[float(weight[c] @ tokens[n, 1 + i * 3 + j]) for j in range(3)] for i in range(3)]
        np.testing.assert_allclose(cams["cam_raw"][n], np.array(by_hand), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_predict_on_a_timm_checkpoint_gives_a_by_hand_classifiers_scores(runs, kind, tmp_path):
    """camlab-predict's scores equal a classifier built by hand: a timm model loaded with the checkpoint's trunk
    weights, the mean over positions (patch tokens without the class token), the checkpoint's linear head."""
    from camlab.predict import main

    run = runs(kind)
    ds, images = val_images(run["size"], 2)
    for i in range(2):  # lossless files at the training size: predict's input tensors are the dataset's
        Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(tmp_path / f"val{i}.png")
    main([str(run["ckpt"]), str(tmp_path / "val0.png"), str(tmp_path / "val1.png"), "--out", str(tmp_path / "out"),
          "--topk", "2", "--device", "cpu"])
    doc = json.loads((tmp_path / "out" / "predictions.json").read_text())

    state = torch.load(run["ckpt"], map_location="cpu", weights_only=False)["state_dict"]
    if kind == "vit":
        net = timm.create_model("test_vit", num_classes=0, dynamic_img_size=True, dynamic_img_pad=True)
    else:
        net = timm.create_model("test_resnet", num_classes=0, output_stride=16)
    net.load_state_dict({k[len("backbone.model."):]: v for k, v in state.items() if k.startswith("backbone.model.")})
    with torch.no_grad():
        feats = net.eval().forward_features(images)
        pooled = feats[:, 1:].mean(dim=1) if kind == "vit" else feats.mean(dim=(2, 3))
        probs = (pooled @ state["head.weight"].T + state["head.bias"]).softmax(dim=1)
    for i, entry in enumerate(doc["images"]):
        preds = entry["predictions"]
        assert [p["class"] for p in preds] == probs[i].argsort(descending=True)[:2].tolist()
        assert [p["score"] for p in preds] == pytest.approx(probs[i].sort(descending=True).values[:2].tolist(),
                                                           abs=1e-5)
    assert (tmp_path / "out" / "val0_cam.png").is_file()
