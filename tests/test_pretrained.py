"""torchvision classifiers as CAM models: same logits as torchvision, the GAP identity, predict and eval on them."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.models as tvm
from PIL import Image

from _tiny_checkpoint import DATA, composed
from camlab.models.pretrained import from_torchvision, load_cam_model


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    """A randomly initialised torchvision ResNet-18 (1000 classes) saved as a state dict."""
    torch.manual_seed(0)
    net = tvm.resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.fixture(scope="module")
def model(resnet18):
    return from_torchvision("resnet18", resnet18[1])


def test_resnet18_state_dict_gives_torchvision_logits_and_obeys_the_gap_identity(resnet18, model):
    net, _ = resnet18
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = net(x)  # (2, 1000), torchvision's own forward
        out = model(x)
        cams = model.cam(out["features"], torch.arange(1000).expand(2, 1000))  # (2, 1000, 2, 3)
    assert out["features"].shape == (2, 512, 2, 3)  # torchvision's stride 32, not camlab's stride-16 default
    assert torch.allclose(out["logits"], expected, atol=1e-5, rtol=1e-5)
    # mean over positions of the CAM + bias = logit, for every class (Zhou et al. 2016, GAP identity)
    assert torch.allclose(cams.mean(dim=(2, 3)) + model.head.bias, expected, atol=1e-5, rtol=1e-5)
    # and the CAM is the plain per-position sum_k w_k^c A^k (a loop, for one class and one position)
    w = net.fc.weight[7]
    assert cams[1, 7, 1, 2].item() == pytest.approx(sum(float(w[k] * out["features"][1, k, 1, 2])
                                                        for k in range(512)), abs=1e-4)


def test_class_names_imagenet_categories_or_a_file(resnet18, model, tmp_path):
    _, path = resnet18
    assert len(model.class_names) == 1000 and model.class_names[0] == "tench"
    assert model.input_spec.image_size == 224 and model.input_spec.mean == (0.485, 0.456, 0.406)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"c{i}" for i in range(1000)) + "\n\n")  # blank lines are ignored
    assert from_torchvision("resnet18", path, class_names=names).class_names[999] == "c999"
    names.write_text("a\nb\n")
    with pytest.raises(ValueError, match="names.txt' has 2 names but the model has 1000 classes"):
        from_torchvision("resnet18", path, class_names=names)


def test_unsupported_or_mismatched_weights_are_refused(resnet18):
    _, path = resnet18
    with pytest.raises(ValueError, match="mobilenet_v3_large.*Hardswish"):
        from_torchvision("mobilenet_v3_large", path)
    with pytest.raises(ValueError, match="not supported as a CAM model"):
        from_torchvision("vit_b_16", path)
    with pytest.raises(ValueError, match="resnet18.pth' does not fit torchvision resnet34"):
        from_torchvision("resnet34", path)
    with pytest.raises(ValueError, match="not a torchvision efficientnet_b0 state dict"):
        from_torchvision("efficientnet_b0", path)


def test_predict_on_a_torchvision_classifier(resnet18, tmp_path):
    from camlab.predict import main, to_input

    net, path = resnet18
    img = tmp_path / "photo.png"
    Image.new("RGB", (80, 60), (30, 120, 200)).save(img)
    main(["--torchvision", "resnet18", "--weights", str(path), str(img), "--out", str(tmp_path / "o"),
          "--image-size", "64", "--topk", "2", "--device", "cpu"])
    doc = json.loads((tmp_path / "o" / "predictions.json").read_text())
    with torch.no_grad():
        import numpy as np

        x = to_input(np.asarray(Image.open(img).convert("RGB")), (64, 64), (0.485, 0.456, 0.406),
                     (0.229, 0.224, 0.225))
        probs = net(x[None]).softmax(dim=1)[0]
    preds = doc["images"][0]["predictions"]
    assert [p["class"] for p in preds] == probs.topk(2).indices.tolist()
    assert preds[0]["name"] == tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"][preds[0]["class"]]
    assert (tmp_path / "o" / "photo_cam.png").is_file()


def test_eval_on_a_torchvision_classifier(tmp_path):
    """A 5-class torchvision ResNet-18 evaluated on the synthetic data: metrics and per-image rows for every image."""
    from camlab.eval import evaluate

    torch.manual_seed(1)
    weights = tmp_path / "r18_5.pth"
    torch.save(tvm.resnet18(weights=None, num_classes=5).state_dict(), weights)
    cfg = composed("eval", [*DATA, "torchvision.arch=resnet18", f"torchvision.weights={weights}", "split=val",
                            "callbacks=[cam_localization]", "callbacks.cam_localization.write_curves=false",
                            "callbacks.cam_localization.num_overlays=1"], tmp_path)
    summary = evaluate(cfg)
    assert summary["source"].startswith("torchvision resnet18")
    assert 0 <= summary["metrics"]["val/loc/MaxBoxAccV2"] <= 100
    assert len((tmp_path / "per_image.csv").read_text().splitlines()) == 1 + 25
    assert load_cam_model(weights, torchvision_arch="resnet18").num_classes == 5


def test_convnext_layernorm_head_folds_into_an_exact_cam():
    """ConvNeXt's LayerNorm after pooling: a small torchvision ConvNeXt (2 stages, 8/16 channels) with random
    LayerNorm affine parameters gives torchvision's logits and the GAP identity with the folded head."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    from camlab.models.pretrained import cam_model_from_torchvision_module

    torch.manual_seed(3)
    net = ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=6).eval()
    with torch.no_grad():
        net.classifier[0].weight.uniform_(0.5, 2.0)
        net.classifier[0].bias.normal_(0.0, 0.5)
    model = cam_model_from_torchvision_module(net, "convnext_tiny")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = net(x)  # (3, 6)
        out = model(x)
        cams = model.cam(out["features"], torch.arange(6).expand(3, 6))  # (3, 6, h, w)
        # plain re-derivation: LN of the pooled vector, then the linear layer
        v = net.avgpool(net.features(x)).flatten(1)  # (3, 16)
        ln = (v - v.mean(1, keepdim=True)) / torch.sqrt(v.var(1, unbiased=False, keepdim=True) + 1e-6)
        by_hand = (ln * net.classifier[0].weight + net.classifier[0].bias) @ net.classifier[2].weight.T \
            + net.classifier[2].bias
    assert torch.allclose(expected, by_hand, atol=1e-5)
    assert torch.allclose(out["logits"], expected, atol=1e-5)
    assert torch.allclose(cams.mean(dim=(2, 3)) + model.head.bias, expected, atol=1e-5)
