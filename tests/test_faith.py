"""camlab.faith against plain references written here: loops over pixels and images, SciPy's sparse solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

from camlab.faith import FaithfulnessMetrics, auc, average_drop_increase, insertion_deletion, road
from camlab.faith.perturb import linear_imputation, pixel_ranks, removal_counts, rise_blur_kernel, substrate

H = W = 12


class LinearModel(torch.nn.Module):
    """Logits = a fixed linear map of the pixels: smooth in every pixel, so every perturbation moves the score."""

    def __init__(self, num_classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(num_classes, 3 * H * W, generator=g, dtype=torch.float64) / 8
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return {"logits": x.double().reshape(x.shape[0], -1) @ self.weight.T}


def _softmax_score(model, image, target):
    logits = (image.double().reshape(-1) @ model.weight.T).tolist()
    m = max(logits)
    e = [math.exp(v - m) for v in logits]
    return e[target] / sum(e)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, H, W, generator=g)
    maps = torch.rand(3, H, W, generator=g)  # no ties
    targets = torch.tensor([0, 2, 1])
    return images, maps, targets


def _order(map_2d):
    """Pixel (row, col) in order of saliency, ties in raster order: a plain sort."""
    values = map_2d.tolist()
    cells = [(i, j) for i in range(len(values)) for j in range(len(values[0]))]
    return sorted(cells, key=lambda c: (-values[c[0]][c[1]], c[0] * len(values[0]) + c[1]))


def test_pixel_ranks_match_a_plain_sort_with_ties():
    m = torch.tensor([[[0.5, 1.0, 0.5], [0.0, 1.0, 0.5]]])
    order = _order(m[0])
    ranks = pixel_ranks(m)[0]
    assert [ranks[i, j].item() for i, j in order] == list(range(6))


def test_average_drop_increase_equal_a_per_image_loop(batch):
    images, maps, targets = batch
    model = LinearModel()
    drop, inc, masked = average_drop_increase(model, images, maps, targets)
    for b in range(3):
        m = maps[b].double()
        norm = (m - m.min()) / (m.max() - m.min())
        y = _softmax_score(model, images[b], int(targets[b]))
        o = _softmax_score(model, images[b] * norm.float(), int(targets[b]))
        assert masked[b].item() == pytest.approx(o, rel=1e-6)
        assert drop[b].item() == pytest.approx(max(0.0, y - o) / y, rel=1e-5, abs=1e-9)
        assert inc[b].item() == float(o > y)


def test_insertion_deletion_equal_a_pixel_loop(batch):
    images, maps, targets = batch
    model = LinearModel()
    steps = 5
    ins, dele = insertion_deletion(model, images, maps, targets, steps=steps, insertion_substrate="mean",
                                   deletion_substrate="zeros", chunk=7)  # chunks across images
    assert ins.shape == dele.shape == (3, steps + 1)
    for b in range(3):
        order = _order(maps[b])
        mean = images[b].mean(dim=(1, 2))
        for k in range(steps + 1):
            n = k * H * W // steps
            grown = torch.empty_like(images[b])
            grown[:] = mean.reshape(3, 1, 1)
            shrunk = images[b].clone()
            for i, j in order[:n]:
                grown[:, i, j] = images[b][:, i, j]
                shrunk[:, i, j] = 0.0
            assert ins[b, k].item() == pytest.approx(_softmax_score(model, grown, int(targets[b])), rel=1e-6)
            assert dele[b, k].item() == pytest.approx(_softmax_score(model, shrunk, int(targets[b])), rel=1e-6)
    # the full image at the ends of both curves
    full = [_softmax_score(model, images[b], int(targets[b])) for b in range(3)]
    assert ins[:, -1].tolist() == pytest.approx(full) and dele[:, 0].tolist() == pytest.approx(full)


def test_auc_is_the_trapezoid_rule():
    curve = torch.tensor([[0.2, 0.9, 0.4, 1.0]], dtype=torch.float64)
    x = np.linspace(0, 1, 4)
    assert float(auc(curve)) == pytest.approx(np.trapezoid(curve[0].numpy(), x))


def test_rise_blur_kernel_is_scipys_filtered_delta():
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    np.testing.assert_allclose(rise_blur_kernel().numpy(), ndimage.gaussian_filter(delta, 5), atol=1e-15)
    img = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    k = ndimage.gaussian_filter(delta, 5)
    blurred = substrate(img, "blur")[0, 1].numpy()
    # zero padding, as RISE's conv2d
    np.testing.assert_allclose(blurred, ndimage.correlate(img[0, 1].numpy(), k, mode="constant"), atol=1e-12)


def _imputed_by_scipy(img: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's system written plainly: each removed pixel = the weighted mean of its in-image neighbours."""
    C, h, w = img.shape
    cells = [tuple(c) for c in np.argwhere(removed)]
    where = {c: n for n, c in enumerate(cells)}
    A, b = lil_matrix((len(cells), len(cells))), np.zeros((len(cells), C))
    for n, (i, j) in enumerate(cells):
        total = 0.0
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if (di, dj) == (0, 0) or not (0 <= i + di < h and 0 <= j + dj < w):
                    continue
                wt = 1 / 6 if di == 0 or dj == 0 else 1 / 12
                total += wt
                if removed[i + di, j + dj]:
                    A[n, where[(i + di, j + dj)]] -= wt
                else:
                    b[n] += wt * img[:, i + di, j + dj]
        A[n, n] = total
    out = img.copy()
    out[:, removed] = spsolve(A.tocsc(), b).reshape(len(cells), C).T
    return out


@pytest.mark.parametrize("kind", ["noise", "block", "ring"])
def test_linear_imputation_solves_roads_system(kind):
    g = torch.Generator().manual_seed(3)
    S = 40
    img = torch.randn(2, 3, S, S, generator=g)
    if kind == "noise":
        removed = torch.rand(2, S, S, generator=g) < 0.7
    else:
        yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
        r = ((yy - 17.0) ** 2 + (xx - 22.0) ** 2).sqrt()
        one = (r < 15) if kind == "block" else ((r > 6) & (r < 11))
        removed = torch.stack([one, ~one])  # a big hole, and everything but it
    got = linear_imputation(img, removed, noise=0.0, tol=1e-6)
    for b in range(2):
        want = _imputed_by_scipy(img[b].double().numpy(), removed[b].numpy())
        np.testing.assert_allclose(got[b].numpy(), want, atol=2e-5)


def test_imputation_noise_is_seeded_per_image():
    img = torch.randn(3, 3, 16, 16)
    removed = torch.rand(3, 16, 16) < 0.5
    seeds = torch.tensor([11, 12, 13])
    all3 = linear_imputation(img, removed, noise=0.01, seeds=seeds)
    one = linear_imputation(img[1:2], removed[1:2], noise=0.01, seeds=seeds[1:2])
    assert torch.equal(all3[1], one[0])
    clean = linear_imputation(img, removed, noise=0.0)
    diff = all3 - clean
    assert bool((diff.permute(1, 0, 2, 3)[:, ~removed] == 0).all())  # known pixels untouched
    assert 0.005 < float(diff.permute(1, 0, 2, 3)[:, removed].std()) < 0.02


def test_removal_counts_are_numpys_percentile_selection():
    rng = np.random.default_rng(0)
    for n in (100, 144, 4096, 50176):
        cam = rng.random(n)
        for p in (10, 25, 33.3, 50, 90):
            assert removal_counts(n, [p], True)[0] == int((cam >= np.percentile(cam, 100 - p)).sum())
            assert removal_counts(n, [p], False)[0] == int((cam <= np.percentile(cam, p)).sum())


def test_road_equals_imputing_each_image_by_scipy(batch):
    images, maps, targets = batch
    model = LinearModel()
    percents = (20, 50, 80)
    morf, lerf = road(model, images, maps, targets, percents=percents, noise=0.0, chunk=4)
    for b in range(3):
        order = _order(maps[b])
        for which, curve in ((order, morf), (order[::-1], lerf)):
            for k, n in enumerate(removal_counts(H * W, percents, which is order)):
                removed = np.zeros((H, W), bool)
                for i, j in which[:n]:
                    removed[i, j] = True
                imputed = torch.from_numpy(_imputed_by_scipy(images[b].double().numpy(), removed))
                assert curve[b, k].item() == pytest.approx(_softmax_score(model, imputed, int(targets[b])), abs=1e-6)


def test_metric_rows_deduplicate_and_aggregate(batch):
    images, maps, targets = batch
    model = LinearModel()
    fm = FaithfulnessMetrics(steps=4, road_percents=(30, 70), chunk=5)
    fm.update(model, images, maps, targets, index=torch.tensor([5, 1, 9]))
    fm.update(model, images[:1], maps[:1], targets[:1], index=torch.tensor([5]))  # DDP padding repeats image 5
    r = fm.report()
    assert r.rows["index"].tolist() == [1, 5, 9]
    drop, inc, _ = average_drop_increase(model, images, maps, targets)
    assert r.scalars["average_drop"] == pytest.approx(100 * drop.mean().item())
    assert r.scalars["increase_in_confidence"] == pytest.approx(100 * inc.mean().item())
    ins, dele = insertion_deletion(model, images, maps, targets, steps=4)
    assert r.scalars["insertion_auc"] == pytest.approx(100 * auc(ins).mean().item())
    assert r.scalars["deletion_auc"] == pytest.approx(100 * auc(dele).mean().item())
    assert r.scalars["road"] == pytest.approx((r.scalars["road_lerf"] - r.scalars["road_morf"]) / 2)
    cols = r.columns()
    order = [1, 0, 2]  # rows sorted by index 1, 5, 9
    assert cols["deletion_auc"].tolist() == pytest.approx((100 * auc(dele)[order]).tolist())
    assert r.curves["insertion_deletion"]["fraction"] == [0, 0.25, 0.5, 0.75, 1.0]
    assert r.curves["road"]["percent"] == [30.0, 70.0]


def test_a_map_on_the_evidence_beats_its_inverse():
    """By construction: the model's score is the mean of the object's pixels, so the object's own map must give the
    best insertion, the worst deletion and ROAD's ranking; its inverse the opposite."""
    S = 16
    obj = torch.zeros(S, S, dtype=torch.bool)
    obj[4:10, 5:12] = True

    def model(x):
        s = x[:, :, obj].mean(dim=(1, 2)) * 4
        return torch.stack([s, -s], dim=1)

    images = (2.0 * obj.float()).expand(1, 3, S, S).contiguous()  # the object is bright, the rest dark
    good, bad = obj.float()[None] + 0.01 * torch.rand(1, S, S), (~obj).float()[None] + 0.01 * torch.rand(1, S, S)
    t = torch.tensor([0])
    ins_g, del_g = insertion_deletion(model, images, good, t, steps=8, insertion_substrate="zeros")
    ins_b, del_b = insertion_deletion(model, images, bad, t, steps=8, insertion_substrate="zeros")
    assert auc(ins_g) > auc(ins_b) and auc(del_g) < auc(del_b)
    morf_g, lerf_g = road(model, images, good, t, percents=(20,), noise=0.0)
    morf_b, lerf_b = road(model, images, bad, t, percents=(20,), noise=0.0)
    assert morf_g < morf_b and lerf_g > lerf_b


def test_bad_arguments_fail_at_construction():
    for kwargs, needle in (({"metrics": ("nope",)}, "metrics"), ({"steps": 0}, "steps"),
                           ({"insertion_substrate": "black"}, "insertion_substrate"),
                           ({"road_percents": (0, 50)}, "road_percents"), ({"score": "prob"}, "score"),
                           ({"chunk": 0}, "chunk")):
        with pytest.raises(ValueError, match=needle):
            FaithfulnessMetrics(**kwargs)


def test_known_base_scores_save_two_passes_and_change_nothing(batch):
    images, maps, targets = batch
    model = LinearModel()
    ins, dele = insertion_deletion(model, images, maps, targets, steps=4, chunk=5)
    calls = model.calls
    base = average_drop_increase(model, images, maps, targets)[2] * 0 + ins[:, -1]
    model.calls = 0
    ins2, dele2 = insertion_deletion(model, images, maps, targets, steps=4, chunk=100, base=base)
    assert model.calls == 2 and calls > 0  # one chunk per curve: 4 stages x 3 images each
    assert torch.allclose(ins2, ins, rtol=1e-12) and torch.allclose(dele2, dele, rtol=1e-12)


def test_average_drop_is_nan_for_a_non_positive_score_and_logit_is_refused_for_it():
    model = lambda x: torch.stack([x.mean(dim=(1, 2, 3)) - 2.0, torch.zeros(x.shape[0])], 1)
    drop, inc, _ = average_drop_increase(model, torch.ones(1, 3, 4, 4), torch.rand(1, 4, 4), torch.tensor([0]),
                                         score="logit")
    assert math.isnan(drop.item()) and inc.item() == 0.0
    with pytest.raises(ValueError, match="score=logit with drop_increase"):
        FaithfulnessMetrics(score="logit")
    FaithfulnessMetrics(score="logit", metrics=("insertion_deletion", "road"))
