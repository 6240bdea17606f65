"""The default one-cycle LR schedule on runs too short for torch's OneCycleLR (it divides by an empty warm-up)."""

from functools import partial

import lightning.pytorch as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from camlab.models import CAMClassifier


class _Backbone(nn.Module):
    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class _LRs(L.Callback):
    def __init__(self) -> None:
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def _fit(steps: int, **sched):
    torch.manual_seed(0)
    model = CAMClassifier(_Backbone(), num_classes=2, optimizer=partial(torch.optim.SGD, lr=0.1),
                          scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, **sched))
    data = DataLoader([{"image": torch.randn(3, 8, 8), "label": i % 2} for i in range(2 * steps)], batch_size=2)
    rec = _LRs()
    L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[rec]).fit(model, train_dataloaders=data)
    return rec.lrs


@pytest.mark.parametrize("steps", [2, 3, 5, 6, 10])
def test_short_one_cycle_runs_keep_a_warm_up(steps):
    lrs = _fit(steps, pct_start=0.2)
    assert len(lrs) == steps
    assert lrs[0] == pytest.approx(0.1 / 25)  # OneCycleLR starts at max_lr / div_factor ...
    assert lrs[-1] < lrs[0] if steps == 2 else max(lrs) > lrs[0] > lrs[-1]  # ... rises (3+ steps), then anneals
    if steps == 10:  # long enough for pct_start=0.2: torch's own schedule, unchanged (peak at step 1)
        assert lrs[1] == pytest.approx(0.1)


def test_one_step_run_trains_at_the_constant_lr():
    with pytest.warns(UserWarning, match="too short for a one-cycle"):
        lrs = _fit(1, pct_start=0.2)
    assert lrs == [pytest.approx(0.1)]


def test_three_phase_two_steps_falls_back_to_constant_lr():
    with pytest.warns(UserWarning, match="too short"):
        assert _fit(2, pct_start=0.2, three_phase=True) == [pytest.approx(0.1)] * 2


def test_fast_dev_run_uses_the_constant_lr_without_a_warning(recwarn):
    torch.manual_seed(0)
    model = CAMClassifier(_Backbone(), num_classes=2, optimizer=partial(torch.optim.SGD, lr=0.1),
                          scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, pct_start=0.2))
    data = DataLoader([{"image": torch.randn(3, 8, 8), "label": i % 2} for i in range(4)], batch_size=2)
    rec = _LRs()
    L.Trainer(accelerator="cpu", fast_dev_run=True, logger=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[rec]).fit(model, train_dataloaders=data)
    assert rec.lrs == [pytest.approx(0.1)]
    assert not [w for w in recwarn if "one-cycle" in str(w.message)]


def test_finetune_model_config_trains_with_sgd_cosine_and_a_10x_head(tmp_path):
    # model=finetune once merged onto model/default and kept OneCycleLR's pct_start: CosineAnnealingLR refused it
    from hydra.utils import instantiate

    from _tiny_checkpoint import DATA, composed

    cfg = composed("train", [*DATA, "model=finetune"], tmp_path)
    assert "pct_start" not in cfg.model.scheduler
    model = instantiate(cfg.model, _convert_="partial")
    rec = _LRs()
    data = DataLoader([{"image": torch.randn(3, 32, 32), "label": i % 5} for i in range(8)], batch_size=2)
    L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[rec]).fit(model, train_dataloaders=data)
    opt = model.trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD)
    assert isinstance(model.trainer.lr_scheduler_configs[0].scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert rec.lrs[0] == pytest.approx(0.001) and rec.lrs[-1] < rec.lrs[0]  # backbone group, decaying
    assert opt.param_groups[1]["initial_lr"] == pytest.approx(10 * opt.param_groups[0]["initial_lr"])


def test_scheduler_keyword_it_does_not_take_is_a_config_error():
    from camlab.errors import ConfigError

    model = CAMClassifier(_Backbone(), num_classes=2, optimizer=partial(torch.optim.SGD, lr=0.1),
                          scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, pct_start=0.2))
    data = DataLoader([{"image": torch.randn(3, 8, 8), "label": i % 2} for i in range(4)], batch_size=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ConfigError, match="scheduler: CosineAnnealingLR rejects its arguments.*pct_start"):
        trainer.fit(model, train_dataloaders=data)
