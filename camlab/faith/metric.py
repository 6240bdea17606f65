"""``FaithfulnessMetrics``: the model-based faithfulness metrics as per-image rows, exact under DDP.

A thin :class:`torchmetrics.Metric` over :mod:`camlab.faith.functional`: ``update`` runs the extra forward passes
on the model's device and appends one row per image (``cat`` states); ``report()`` de-duplicates the rows by
dataset index (DDP padding repeats images) and derives every number from them, like
:class:`camlab.wsol.WSOLMetrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from camlab.faith.functional import SCORES, auc, average_drop_increase, insertion_deletion, road, scores
from camlab.faith.perturb import SUBSTRATES

__all__ = ["FAITH_METRICS", "HIGHER_IS_BETTER", "FaithReport", "FaithfulnessMetrics"]

#: the metric groups: each one's forward passes per image are in the README's table
FAITH_METRICS = ("drop_increase", "insertion_deletion", "road")

#: direction of every scalar ``report()`` gives (all in percent)
HIGHER_IS_BETTER = {
    "average_drop": False,
    "increase_in_confidence": True,
    "insertion_auc": True,
    "deletion_auc": False,
    "road_morf": False,
    "road_lerf": True,
    "road": True,
}


@dataclass
class FaithReport:
    """``scalars`` (percent, keys of :data:`HIGHER_IS_BETTER`); ``curves``: ``{"insertion_deletion": {"fraction",
    "insertion", "deletion"}, "road": {"percent", "road_morf", "road_lerf"}}`` (mean scores x 100); ``rows``:
    per-image arrays sorted by dataset index (``index`` and one column per :meth:`columns` name)."""

    scalars: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)

    def columns(self) -> dict[str, np.ndarray]:
        """The per-image columns of ``per_image.csv``: each image's score (of its target class), its score on the
        map-masked input, its drop and increase, its insertion / deletion area and its mean ROAD scores (x 100)."""
        r, out = self.rows, {}
        if "masked" in r:
            out.update(score_target=r["base"], score_masked=r["masked"], average_drop=100 * r["drop"],
                       increase_in_confidence=100 * r["increase"])
        if "insertion" in r:
            out.update(insertion_auc=100 * auc(torch.from_numpy(r["insertion"])).numpy(),
                       deletion_auc=100 * auc(torch.from_numpy(r["deletion"])).numpy())
        if "morf" in r:
            out.update(road_morf=100 * r["morf"].mean(1), road_lerf=100 * r["lerf"].mean(1))
        return out


class FaithfulnessMetrics(Metric):
    """Average Drop / Increase in Confidence, insertion / deletion AUC and ROAD of the maps, per image.

    Args:
        metrics: which of :data:`FAITH_METRICS` to run.
        steps: insertion / deletion stages (RISE's ``H * W / 224`` pixels per step is ``steps = H * W / 224``).
        insertion_substrate / deletion_substrate: one of :data:`camlab.faith.perturb.SUBSTRATES` (RISE: blur /
            zeros).
        road_percents: the percents of pixels ROAD imputes; road_noise: its noise standard deviation.
        score: ``"softmax"`` (the target's probability, the default) or ``"logit"``.
        chunk: perturbed images per forward pass (the memory budget).
        seed: mixed into each image's ROAD noise seed with its dataset index.

    ``report().scalars`` (percent): ``average_drop`` = 100 mean(max(0, Y - O) / Y), ``increase_in_confidence`` =
    100 mean(O > Y), ``insertion_auc`` / ``deletion_auc`` = 100 mean(area under the score curve),
    ``road_morf`` / ``road_lerf`` = 100 mean over images and percents of the imputed image's score, and ``road`` =
    (``road_lerf`` - ``road_morf``) / 2 (pytorch-grad-cam's ROADCombined). Directions: :data:`HIGHER_IS_BETTER`.

    Example:
        >>> model = lambda x: torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1)
        >>> images = torch.ones(2, 3, 8, 8); maps = torch.rand(2, 8, 8)
        >>> fm = FaithfulnessMetrics(metrics=("drop_increase",))
        >>> fm.update(model, images, maps, torch.tensor([0, 0]), index=torch.tensor([4, 5]))
        >>> r = fm.report(); r.scalars["average_drop"] > 0, r.scalars["increase_in_confidence"]
        (True, 0.0)
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None  # per key: HIGHER_IS_BETTER

    def __init__(self, metrics: Sequence[str] = FAITH_METRICS, steps: int = 20, insertion_substrate: str = "blur",
                 deletion_substrate: str = "zeros",
                 road_percents: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90), road_noise: float = 0.01,
                 score: str = "softmax", chunk: int = 64, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.groups = tuple(metrics)
        unknown = set(self.groups) - set(FAITH_METRICS)
        if unknown or not self.groups:
            raise ValueError(f"metrics lists some of {', '.join(FAITH_METRICS)}; got {list(metrics)}")
        if int(steps) < 1:
            raise ValueError(f"steps (insertion / deletion stages) must be >= 1, got {steps}")
        for name, kind in (("insertion_substrate", insertion_substrate), ("deletion_substrate", deletion_substrate)):
            if kind not in SUBSTRATES:
                raise ValueError(f"{name} must be one of {', '.join(SUBSTRATES)}; got {kind!r}")
        self.road_percents = tuple(float(p) for p in road_percents)
        if not self.road_percents or any(not 0 < p < 100 for p in self.road_percents):
            raise ValueError(f"road_percents must be in (0, 100), e.g. [10, 20, ..., 90]; got {list(road_percents)}")
        if not float(road_noise) >= 0:
            raise ValueError(f"road_noise must be >= 0, got {road_noise}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
        if score == "logit" and "drop_increase" in self.groups:
            raise ValueError("score=logit with drop_increase: Average Drop divides by the score, which a logit can make "
                             "negative; use score=softmax, or leave drop_increase out of metrics")
        if int(chunk) < 1:
            raise ValueError(f"chunk (images per forward pass) must be >= 1, got {chunk}")
        self.steps, self.insertion_substrate, self.deletion_substrate = int(steps), insertion_substrate, deletion_substrate
        self.road_noise, self.score, self.chunk, self.seed = float(road_noise), score, int(chunk), int(seed)
        states = ["index", "base"]
        states += ["masked", "drop", "increase"] if "drop_increase" in self.groups else []
        states += ["insertion", "deletion"] if "insertion_deletion" in self.groups else []
        states += ["morf", "lerf"] if "road" in self.groups else []
        self.state_names = tuple(states)
        for name in states:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, model: Callable, images: Tensor, maps: Tensor, targets: Tensor, index: Tensor,
               base: Tensor | None = None) -> None:
        """images (B, 3, H, W) model inputs; maps (B, H, W) at the input size (any range: ranks and min-max
        normalization only); targets (B,) classes; index (B,) dataset indices; ``base``: the (B,) scores of the
        inputs when known (saves a forward pass)."""
        if index is None or index.shape != targets.shape:
            raise ValueError("index (B,) dataset indices are required: they de-duplicate DDP padding")
        targets = targets.to(images.device)
        row = {"index": index.to(torch.int64)}
        row["base"] = scores(model, images, targets, self.score, self.chunk) if base is None else base.double()
        if "drop_increase" in self.groups:
            row["drop"], row["increase"], row["masked"] = average_drop_increase(
                model, images, maps, targets, self.score, base=row["base"], chunk=self.chunk)
        if "insertion_deletion" in self.groups:
            row["insertion"], row["deletion"] = insertion_deletion(
                model, images, maps, targets, self.steps, self.insertion_substrate, self.deletion_substrate,
                self.score, self.chunk, base=row["base"])
        if "road" in self.groups:
            row["morf"], row["lerf"] = road(model, images, maps, targets, self.road_percents, self.road_noise,
                                            index=index + self.seed * 1_000_000_007, score=self.score,
                                            chunk=self.chunk)
        for name, value in row.items():
            getattr(self, name).append(value.to(self.device))

    def _report(self) -> FaithReport:
        report = FaithReport()
        if isinstance(self.index, list) and not self.index:
            return report
        index = dim_zero_cat(self.index).cpu().numpy()
        if index.size == 0:
            return report
        _, first = np.unique(index, return_index=True)
        rows = {name: dim_zero_cat(getattr(self, name)).cpu().numpy()[first] for name in self.state_names}
        report.rows = rows
        s = report.scalars
        if "masked" in rows:
            s["average_drop"] = 100 * float(rows["drop"].mean())
            s["increase_in_confidence"] = 100 * float(rows["increase"].mean())
        if "insertion" in rows:
            ins, dele = rows["insertion"], rows["deletion"]
            s["insertion_auc"] = 100 * float(auc(torch.from_numpy(ins)).mean())
            s["deletion_auc"] = 100 * float(auc(torch.from_numpy(dele)).mean())
            report.curves["insertion_deletion"] = {
                "fraction": (np.arange(self.steps + 1) / self.steps).tolist(),
                "insertion": (100 * ins.mean(0)).tolist(), "deletion": (100 * dele.mean(0)).tolist()}
        if "morf" in rows:
            morf, lerf = rows["morf"], rows["lerf"]
            s["road_morf"], s["road_lerf"] = 100 * float(morf.mean()), 100 * float(lerf.mean())
            s["road"] = (s["road_lerf"] - s["road_morf"]) / 2
            report.curves["road"] = {"percent": list(self.road_percents), "road_morf": (100 * morf.mean(0)).tolist(),
                                     "road_lerf": (100 * lerf.mean(0)).tolist()}
        return report

    def compute(self) -> dict[str, Tensor]:
        """The scalars of :meth:`report` as float64 tensors."""
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in self._report().scalars.items()}

    def report(self) -> FaithReport:
        """Scalars, curves and per-image rows of every rank (one sync; call it on every rank)."""
        with self.sync_context(should_sync=True, should_unsync=True):
            return self._report()
