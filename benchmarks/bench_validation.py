"""What CAM + localization metrics add to the default experiment's validation epoch.

Runs ``trainer.validate`` on the default config's validation split (1,000 images, 64 px) with and without the
CAMLocalization callback (MaxBoxAccV2 + PxAP + top-k loc every epoch, curves CSV/PNG and overlays; MaxBoxAcc
is test-only by default), alternating, several rounds in one process, and reports the ratio of medians.
The model is trained for one short epoch first so that its CAMs look like a real run's.

    python benchmarks/bench_validation.py [--rounds 5] [overrides ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate


def main() -> None:
    import lightning.pytorch as L

    from camlab.callbacks import CAMLocalization
    from camlab.utils import instantiate_group

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_module("camlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=args.overrides)
        cfg.paths.output_dir = tmp
        cfg.paths.checkpoint_dir = tmp + "/checkpoints"
        torch.manual_seed(0)
        dm = instantiate(cfg.data, _convert_="partial")
        model = instantiate(cfg.model, _convert_="partial")
        L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=20, limit_val_batches=0, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(model, dm)
        cam_cb = next(c for c in instantiate_group(cfg.callbacks) if isinstance(c, CAMLocalization))

        def validate(with_cams: bool) -> float:
            callbacks = [cam_cb] if with_cams else []
            trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=callbacks, enable_progress_bar=False,
                                enable_model_summary=False, enable_checkpointing=False)
            start = time.perf_counter()
            trainer.validate(model, datamodule=dm, verbose=False)
            return time.perf_counter() - start

        validate(True)  # warm-up: numba compilation, dataset render
        plain, cams = [], []
        for r in range(args.rounds):
            plain.append(validate(False))
            cams.append(validate(True))
            print(f"round {r}: validation {plain[-1]:.2f} s   with CAM metrics {cams[-1]:.2f} s", flush=True)
    n = len(dm.val_dataloader().dataset)
    p, c = statistics.median(plain), statistics.median(cams)
    print(f"\n{n} images: plain validation {p:.2f} s ({1000 * p / n:.2f} ms/img), with CAM + metrics {c:.2f} s "
          f"({1000 * c / n:.2f} ms/img): +{100 * (c / p - 1):.0f}% ({1000 * (c - p) / n:.2f} ms/img added)")
    print("last results:", {k: round(v, 2) for k, v in cam_cb.last_results.get("val", {}).items()
                            if k in ("MaxBoxAccV2", "PxAP", "gt_known_loc")})


if __name__ == "__main__":
    main()
