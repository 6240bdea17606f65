"""CAMClassifier: backbone -> global pooling -> linear, with CAMs from the same forward pass; trained by a WSOL method."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics.classification import MulticlassAccuracy

from camlab.errors import ConfigError, TrainingDiverged
from camlab.methods import WSOLMethod, build_method
from camlab.methods.base import StepRandom, step_seed

POOLS = ("gap", "gmp")


class CAMClassifier(L.LightningModule):
    """A classifier whose logits are ``y^c = sum_k w_k^c pool(A^k) + b^c`` and whose CAMs come for free.

    Args:
        backbone: module mapping ``(B, 3, H, W)`` images to ``(B, K, h, w)`` features, with ``num_features`` = K.
        num_classes: number of classes C.
        pool: ``"gap"`` (global average pooling, the CAM paper's choice) or ``"gmp"`` (global max pooling).
        optimizer: a partial ``torch.optim.Optimizer`` (Hydra ``_partial_: true``) taking the param groups.
        scheduler: optional partial LR scheduler; ``total_steps`` / ``T_max`` are filled in from the trainer
            when the scheduler takes them and the config leaves them out. Stepped every optimizer step.
        head_lr_mult: learning-rate multiplier of the new linear head relative to the backbone (e.g. 10 when
            fine-tuning a pretrained backbone).
        label_smoothing: cross-entropy label smoothing.
        nonfinite_patience: non-finite (NaN/inf) training losses in a row that are skipped (no optimizer step,
            a warning) before the run stops with :class:`~camlab.errors.TrainingDiverged`; 0: stop at the first.
            The weights are never stepped on a non-finite loss, and a checkpoint of non-finite weights is never
            written (the run stops instead), so ``last.ckpt`` and the best checkpoint stay finite.
        wsol: the WSOL training method (:mod:`camlab.methods`): None or ``{"name": "cam"}`` (vanilla CAM training),
            a spec such as ``{"name": "adl", "drop_rate": 0.75}``, or a :class:`~camlab.methods.WSOLMethod`. Built
            here (``wsol_method``); its resolved spec is stored in the hyper-parameters, so a checkpoint rebuilds it.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        pool: str = "gap",
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        head_lr_mult: float = 1.0,
        label_smoothing: float = 0.0,
        nonfinite_patience: int = 0,
        wsol: Mapping[str, Any] | WSOLMethod | None = None,
    ) -> None:
        super().__init__()
        if isinstance(nonfinite_patience, bool) or not isinstance(nonfinite_patience, int) or nonfinite_patience < 0:
            raise ConfigError(f"nonfinite_patience must be an integer >= 0, got {nonfinite_patience!r}",
                              settings=["nonfinite_patience"])
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        num_features = getattr(backbone, "num_features", None)
        if not isinstance(num_features, int):
            raise ValueError(f"backbone {type(backbone).__name__} must expose an int `num_features` (channels K)")
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler", "wsol"])
        self.backbone = backbone
        self.pool = pool
        self.head = nn.Linear(num_features, num_classes)
        self.wsol_method = build_method(wsol)
        self.wsol_method.attach(backbone, num_classes)
        self.hparams["wsol"] = self.wsol_method.spec()  # plain values: checkpoints rebuild the method from it
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.head_lr_mult = head_lr_mult
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.nonfinite_patience = nonfinite_patience
        self._nonfinite_in_a_row = 0
        topk = min(5, num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=topk, average="micro")
        self.topk = topk
        self._train_correct, self._train_seen = torch.zeros(()), 0  # reset by on_train_epoch_start
        #: The run's resolved config (a plain dict; set by camlab-train): saved in checkpoints so that
        #: camlab-eval / camlab-predict rebuild the backbone without the training command line.
        self.run_config: dict[str, Any] | None = None

    # ---- forward -------------------------------------------------------------------------------------
    def pooled(self, features: Tensor) -> Tensor:
        if self.pool == "gap":
            return features.mean(dim=(2, 3))  # (B, K)
        return features.amax(dim=(2, 3))  # (B, K)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``(B, 3, H, W) -> {"logits": (B, C), "features": (B, K, h, w)}``."""
        features = self.backbone(images)  # (B, K, h, w)
        logits = self.head(self.pooled(features))  # (B, C)
        return {"logits": logits, "features": features}

    def cam(self, features: Tensor, classes: Tensor) -> Tensor:
        """Raw CAMs ``M^c = sum_k w_k^c A^k`` of ``classes`` ((B,) or (B, k)) from this forward's features (the WSOL
        method's map where it defines its own: ACoL's fusion of its two branches)."""
        return self.wsol_method.cam(self, features, classes)

    # ---- steps ---------------------------------------------------------------------------------------
    def classification_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy with the model's label smoothing."""
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def step_random(self, batch_idx: int, device: torch.device) -> StepRandom:
        """The generators of this training step on this process: seeded from the method's ``seed``, the rank, the
        epoch and ``batch_idx``, so DDP ranks differ and a resumed run draws what an uninterrupted one draws."""
        seed = step_seed(getattr(self.wsol_method, "seed", 0), self.global_rank, self.current_epoch, batch_idx)
        return StepRandom(seed, device)

    def on_train_start(self) -> None:
        # After a resume the restored scheduler keeps the length it was built for. A run resumed with more
        # optimizer steps (a larger trainer.max_epochs, more data, fewer devices) would crash at the old end
        # ("Tried to step N times"): say so before training, not after hours.
        if self.trainer.global_step == 0:
            return
        total = int(self.trainer.estimated_stepping_batches)
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            length = getattr(sched, "total_steps", None) or getattr(sched, "T_max", None)
            if length is None:
                continue
            if any("max_lr" not in g for g in sched.optimizer.param_groups) and hasattr(sched, "total_steps"):
                length = 0  # the checkpoint was written without this schedule (a run too short for one)
            if total > length:
                raise ConfigError(
                    f"this run resumes at step {self.trainer.global_step} with {total} optimizer steps in all, but "
                    f"its checkpoint's {type(sched).__name__} schedule was built for {length or 'no'} steps: resume "
                    f"with the settings of the run that wrote it (the trainer's max_epochs and devices, the data), "
                    f"or start a new run (a backbone with pretrained=<checkpoint> takes its backbone weights)",
                    settings=["max_epochs", "pretrained"])
            if total < length:
                rank_zero_warn(f"{type(sched).__name__}: this resumed run has {total} optimizer steps in all, its "
                               f"checkpoint's schedule {length}: the learning rate will not finish its schedule")

    def on_train_epoch_start(self) -> None:
        self._train_correct = torch.zeros((), device=self.device)  # this rank's epoch sums for train/acc
        self._train_seen = 0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch["image"], batch["label"]
        rng = self.step_random(batch_idx, images.device) if self.wsol_method.random else None
        loss, logits = self.wsol_method.training_loss(self, images, labels, rng)
        if not self._finite_on_every_rank(loss):
            # Stepping on a NaN/inf loss would make every weight NaN; all ranks take the same decision.
            self._nonfinite_in_a_row += 1
            if self._nonfinite_in_a_row > self.nonfinite_patience:
                raise TrainingDiverged(self._diverged_message(f"the training loss is {float(loss.detach())}",
                                                              batch_idx), settings=self._divergence_settings())
            rank_zero_warn(f"non-finite training loss at epoch {self.current_epoch}, step {self.global_step} "
                           f"(batch {batch_idx}): batch skipped ({self._nonfinite_in_a_row} in a row, "
                           f"nonfinite_patience={self.nonfinite_patience})")
            return None  # no backward, no optimizer step
        self._nonfinite_in_a_row = 0
        # train/acc (micro accuracy of the epoch) from plain tensor sums, logged once at the epoch's end: a
        # torchmetrics forward, or a second self.log, per step would add overhead to every step of a small model.
        self._train_correct += (logits.detach().argmax(dim=1) == labels).sum()
        bs = labels.shape[0]
        self._train_seen += bs
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        return loss

    def on_train_epoch_end(self) -> None:
        if self._train_seen:
            acc = self._train_correct.float() / self._train_seen
            self.log("train/acc", acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=self._train_seen)

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        out = self(batch["image"])
        loss = self.classification_loss(out["logits"], batch["label"])
        self.val_acc(out["logits"], batch["label"])
        self.val_acc5(out["logits"], batch["label"])
        bs = batch["label"].shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True, batch_size=bs)
        self.log(f"{stage}/acc", self.val_acc, prog_bar=True, batch_size=bs)
        self.log(f"{stage}/acc_top{self.topk}", self.val_acc5, batch_size=bs)
        # The CAM callback reads the features of THIS forward pass: no second pass, no hooks.
        return {"loss": loss, "logits": out["logits"].detach(), "features": out["features"].detach()}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor] | Tensor, batch_idx: int) -> dict[str, Tensor]:
        images = batch["image"] if isinstance(batch, dict) else batch
        return self(images)

    # ---- divergence --------------------------------------------------------------------------------------
    def _finite_on_every_rank(self, value: Tensor) -> bool:
        finite = bool(torch.isfinite(value.detach()).all())  # one device sync per step
        if self._trainer is not None and self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        return finite

    def _divergence_settings(self) -> list[str]:
        precision = str(getattr(self._trainer, "precision", "32-true")) if self._trainer is not None else "32-true"
        return ["lr"] + (["precision"] if not precision.startswith(("32", "64")) else [])

    def _diverged_message(self, what: str, batch_idx: int | None = None) -> str:
        """``what`` at this epoch/step, the likely causes with their current values, and what is kept."""
        where = f"epoch {self.current_epoch}, step {self.global_step}"
        where += f" (batch {batch_idx})" if batch_idx is not None else ""
        try:
            lrs = sorted({f"{g['lr']:.3g}" for g in self.trainer.optimizers[0].param_groups})
        except (AttributeError, IndexError, RuntimeError):
            lrs = []
        lr = f" (lr now {', '.join(lrs)})" if lrs else ""
        precision = str(getattr(self._trainer, "precision", "32-true")) if self._trainer is not None else "32-true"
        causes = f"lower the learning rate{lr}"
        if not precision.startswith(("32", "64")):
            causes += f", or train in 32-bit precision (precision={precision} can overflow: precision=32)"
        return (f"{what} at {where}: the run diverged. {causes[0].upper()}{causes[1:]}, or check the inputs "
                f"for NaN values, and start a new run; the checkpoints already written (last.ckpt of the last "
                f"finished epoch, the best one) hold finite weights and are kept")

    # ---- checkpoints -----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what inference needs besides the weights: the run config and the input pipeline's metadata.

        Refuses (:class:`~camlab.errors.TrainingDiverged`) to save non-finite weights while fitting: such a file
        would replace a good ``last.ckpt`` or be picked as the best checkpoint."""
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if fitting and not bool(torch.stack([torch.isfinite(p).all() for p in self.parameters()]).all()):
            raise TrainingDiverged(self._diverged_message("the weights are no longer finite (NaN/inf)"),
                                   settings=self._divergence_settings())
        if self.run_config is not None:
            checkpoint["camlab_run_config"] = self.run_config
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            meta = {k: getattr(dm, k, None) for k in ("image_size", "mean", "std", "class_names")}
            checkpoint["camlab_data"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in meta.items()}

    # ---- optimization --------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("CAMClassifier needs an `optimizer` (a partial optimizer, e.g. Hydra _partial_: true)")
        groups = [
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "name": "backbone"},
            # new layers of a WSOL method (ACoL's second head, SPG's heads) learn at the head's rate
            {"params": list(self.head.parameters()) + list(self.wsol_method.parameters()), "name": "head"},
        ]
        try:
            optimizer = self.optimizer_factory(groups)
        except (TypeError, ValueError) as err:  # e.g. lr="abc" or a negative lr
            name = getattr(getattr(self.optimizer_factory, "func", None), "__name__", "the optimizer")
            raise ConfigError(f"optimizer: {name} rejects its arguments: {err} (check its lr, weight_decay, "
                              f"momentum ...)", settings=["optimizer"]) from None
        if self.head_lr_mult != 1.0:
            optimizer.param_groups[1]["lr"] *= self.head_lr_mult
            optimizer.param_groups[1]["initial_lr"] = optimizer.param_groups[1]["lr"]
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self._build_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _build_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        factory = self.scheduler_factory
        given = dict(getattr(factory, "keywords", {}) or {})
        target = getattr(factory, "func", factory)
        params = inspect.signature(target).parameters
        extra: dict[str, Any] = {}
        steps = int(self.trainer.estimated_stepping_batches)
        if "total_steps" in params and given.get("total_steps") is None and given.get("epochs") is None:
            extra["total_steps"] = steps
        if "T_max" in params and given.get("T_max") is None:
            extra["T_max"] = steps
        if "max_lr" in params:
            # One peak per param group, so the head keeps its multiplier under OneCycleLR.
            extra["max_lr"] = [g["lr"] for g in optimizer.param_groups]
        if "pct_start" in params and "total_steps" in extra:
            asked = float(given.get("pct_start", params["pct_start"].default))
            pct = _one_cycle_pct_start(given, params, steps)
            # fast_dev_run (debug=fast) is a smoke test of one step: no warning there
            warn = (lambda msg: None) if self.trainer.fast_dev_run else rank_zero_warn
            if pct is None:
                warn(f"{target.__name__}: a run of {steps} optimizer step(s) is too short for a one-cycle "
                     "schedule; training at the optimizer's constant lr instead")
                return None
            if pct != asked:
                warn(f"{target.__name__}: {steps} optimizer steps leave no warm-up step at pct_start={asked:g}; "
                     f"using pct_start={pct:.3g}")
                extra["pct_start"] = pct
        try:
            return factory(optimizer, **extra)
        except TypeError as err:  # a keyword the scheduler does not take (e.g. pct_start for a cosine schedule)
            raise ConfigError(f"scheduler: {target.__name__} rejects its arguments: {err} (check the scheduler's "
                              f"arguments)", settings=["scheduler"]) from None


def _one_cycle_pct_start(given: dict, params, steps: int) -> float | None:
    """``pct_start`` that gives a one-cycle schedule of ``steps`` steps a warm-up of at least one step.

    torch's OneCycleLR ends its warm-up at step ``pct_start * total_steps - 1`` and divides by that phase's length,
    so a short run (``pct_start=0.2`` with 5 steps, e.g. ``debug=limit trainer.max_epochs=1``) fails with
    ZeroDivisionError in its constructor. The warm-up then ends half-way through step 1 (``pct_start = 1.5 /
    steps``); None where no one-cycle schedule fits (1 step, or 2 with ``three_phase``).

    Example:
        >>> import inspect, torch
        >>> p = inspect.signature(torch.optim.lr_scheduler.OneCycleLR).parameters
        >>> [_one_cycle_pct_start({"pct_start": 0.2}, p, n) for n in (1, 2, 5, 6, 100)]
        [None, 0.75, 0.3, 0.2, 0.2]
    """
    pct = float(given.get("pct_start", params["pct_start"].default))
    three = bool(given.get("three_phase", params["three_phase"].default if "three_phase" in params else False))
    if pct * steps - 1 > 0 and (not three or 2 * pct * steps - 2 < steps - 1):
        return pct
    pct = 1.5 / steps
    if pct >= 1 or (three and 2 * pct * steps - 2 >= steps - 1):
        return None
    return pct
