"""camlab-compare --table: the methods table pivoted from fabricated job dirs (tiny metrics files written here)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from camlab.compare import main as compare_main
from camlab.compare.table import config_value

# (job, method, backbone, test MaxBoxAccV2, test MaxBoxAccV2@val, test PxAP, test top1_loc@val)
JOBS = [
    ("0", "cam", "tiny_cnn", 60.0, 55.0, 50.0, 40.0),
    ("1", "has", "tiny_cnn", 64.0, 58.0, 49.0, 41.0),
    ("2", "cam", "resnet18", 70.0, 61.0, 52.0, 45.0),
    ("3", "has", "resnet18", 66.0, 62.0, 57.0, 44.0),
    ("4", "cam", "resnet18", 74.0, 65.0, 54.0, 47.0),  # a second cam/resnet18 job: the cell is the mean
]
CELLS = ["test/loc/MaxBoxAccV2", "test/loc/MaxBoxAccV2@val", "test/loc/PxAP", "test/loc/top1_loc@val"]


def write_train_job(job: Path, method: str, backbone: str, values: tuple) -> None:
    (job / ".hydra").mkdir(parents=True)
    (job / "csv").mkdir()
    cfg = {"wsol": {"name": method}, "backbone": {"name": backbone}, "data": {"val_per_class": 5},
           "train": True, "test": True, "trainer": {"max_epochs": 1}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"wsol={method}", f"backbone={backbone}"]))
    header = ["epoch", "step", "val/acc", "val/loc/MaxBoxAccV2", *CELLS]
    rows = [[0, 10, 0.9, 50.0, "", "", "", ""], [1, 10, "", "", *values]]  # Lightning logs test/ at epoch = fitted
    with (job / "csv" / "metrics.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def write_baseline_job(job: Path) -> None:
    """A camlab-eval baseline=center run dir: config + metrics.json, no CSV (the maps path logs none)."""
    (job / ".hydra").mkdir(parents=True)
    cfg = {"baseline": "center", "split": "test", "eval": {"val_thresholds": "auto"}, "backbone": {"name": "tiny_cnn"},
           "data": {"val_per_class": 5}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["baseline=center"]))
    metrics = {"test/loc/MaxBoxAccV2": 45.0, "test/loc/MaxBoxAccV2@val": 41.0, "test/loc/PxAP": 44.0}
    (job / "metrics.json").write_text(json.dumps({"split": "test", "metrics": metrics}))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    for job, method, backbone, *values in JOBS:
        write_train_job(root / job, method, backbone, tuple(values))
    write_baseline_job(root / "center")
    failed = root / "5"  # killed before its test: listed, not used
    write_train_job(failed, "cam", "tiny_cnn", (1.0, 1.0, 1.0, 1.0))
    lines = (failed / "csv" / "metrics.csv").read_text().splitlines()
    (failed / "csv" / "metrics.csv").write_text("\n".join(lines[:2]) + "\n")
    return root


@pytest.fixture(scope="module")
def table(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    compare_main([str(sweep), "--table", "--out", str(out), "--running-window", "0"])
    return out


def test_the_csv_has_the_mean_of_each_pair_and_the_best_per_column(table):
    rows = list(csv.DictReader((table / "table.csv").open()))
    got = {(r["wsol.name"], r["backbone.name"], r["metric"]): r for r in rows}
    # by hand: cam/resnet18 is the mean of jobs 2 and 4
    cam18 = got[("cam", "resnet18", "test/loc/MaxBoxAccV2")]
    assert float(cam18["mean"]) == 72.0 and cam18["n"] == "2" and cam18["jobs"] == "2 4"
    assert float(cam18["std"]) == pytest.approx(((70 - 72) ** 2 + (74 - 72) ** 2) ** 0.5)  # n - 1 = 1
    assert float(got[("has", "tiny_cnn", "test/loc/PxAP")]["mean"]) == 49.0
    best = {k for k, r in got.items() if r["best"] == "1"}
    assert best == {("has", "tiny_cnn", "test/loc/MaxBoxAccV2"), ("has", "tiny_cnn", "test/loc/MaxBoxAccV2@val"),
                    ("cam", "tiny_cnn", "test/loc/PxAP"), ("has", "tiny_cnn", "test/loc/top1_loc@val"),
                    ("cam", "resnet18", "test/loc/MaxBoxAccV2"), ("cam", "resnet18", "test/loc/MaxBoxAccV2@val"),
                    ("has", "resnet18", "test/loc/PxAP"), ("cam", "resnet18", "test/loc/top1_loc@val")}
    # the baseline: one row for every column, never best, no top-1 loc (not measured)
    base = {r["metric"]: r for r in rows if r["wsol.name"] == "center baseline"}
    assert set(base) == {"test/loc/MaxBoxAccV2", "test/loc/MaxBoxAccV2@val", "test/loc/PxAP"}
    assert base["test/loc/MaxBoxAccV2"]["mean"] == "45.0" and base["test/loc/PxAP"]["best"] == "0"
    assert not any(r["jobs"].split()[0] == "5" for r in rows)  # the failed job is left out


def test_markdown_marks_the_best_and_lists_the_protocol(table):
    md = (table / "table.md").read_text().splitlines()
    header = next(line for line in md if line.startswith("| wsol.name"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols == ["wsol.name"] + [f"{b} {m}" for b in ("tiny_cnn", "resnet18")
                                    for m in ("MaxBoxAccV2", "MaxBoxAccV2@val", "PxAP", "top1_loc@val")]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
             for line in md if line.startswith("| ") and line != header}
    assert cells["cam"] == ["60.0", "55.0", "**50.0**", "40.0", "**72.0 ±2.8 (n=2)**", "**63.0 ±2.8 (n=2)**",
                            "53.0 ±1.4 (n=2)", "**46.0 ±1.4 (n=2)**"]
    assert cells["has"][:2] == ["**64.0**", "**58.0**"]
    assert cells["center baseline"] == ["45.0", "41.0", "44.0", "—"] * 2
    text = "\n".join(md)
    assert "data.val_per_class: 5" in text and "job 5: failed" in text and "@val" in text
    assert (table / "table.png").stat().st_size > 10_000


def test_printed_table_and_other_keys(sweep, capsys):
    compare_main([str(sweep), "--table", "--no-files", "--rows", "backbone.name", "--columns", "wsol.name",
                  "--cells", "test/loc/PxAP", "--running-window", "0"])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "resnet18" in ln and "│" in ln)
    assert [c.strip() for c in line.strip("│").split("│")] == ["resnet18", "53.0 ±1.4 (n=2) *", "57.0 *"]
    assert config_value({"a": {"b": {"c": 3}}}, "a.b.c") == 3 and config_value({"a": 1}, "a.b") is None


def test_bad_table_keys_are_one_line(sweep, capsys):
    with pytest.raises(SystemExit) as exc:
        compare_main([str(sweep), "--table", "--no-files", "--rows", "nothing.here", "--running-window", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finished job has both nothing.here and backbone.name" in err[0]
    with pytest.raises(SystemExit):
        compare_main([str(sweep), "--table", "--no-files", "--cells", "test/nope", "--running-window", "0"])
    assert "--cells test/nope: no job logged any of them" in capsys.readouterr().err


# ---- the sweeps behind the table: experiment=wsol_table and hparams_search=<method> ------------------------------
def sweep_params(overrides: list[str]) -> tuple:
    """(composed config, {key: parsed sweep value}) of a multirun config, as the sweeper would read its params."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from test_configs import composed

    cfg = composed(overrides)
    parser = OverridesParser.create()
    params = {k: parser.parse_override(f"{k}={v}").value() for k, v in HydraConfig.get().sweeper.params.items()}
    return cfg, params


def test_wsol_table_sweeps_every_method_on_two_backbones_with_the_budget():
    cfg, params = sweep_params(["experiment=wsol_table"])
    assert params["wsol"].list == ["cam", "has", "acol", "spg", "adl", "cutmix"]
    assert params["backbone"].list == ["tiny_cnn", "resnet18"]
    assert cfg.data.val_per_class == 10 and cfg.test is True and cfg.optimized_metric.startswith("val/")


@pytest.mark.parametrize("method", ["cam", "has", "acol", "spg", "adl", "cutmix"])
def test_hparams_search_per_method_composes_and_its_ranges_build_the_method(method):
    from hydra.core.hydra_config import HydraConfig

    from camlab.methods import build_method

    cfg, params = sweep_params([f"hparams_search={method}"])
    sweeper = HydraConfig.get().sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and HydraConfig.get().mode.name == "MULTIRUN"
    assert cfg.wsol.name == method and cfg.test is False and cfg.optimized_metric == "val/loc/MaxBoxAccV2"
    assert sweeper.study_name == f"{cfg.task_name}_{method}"
    lr = params.pop("model.optimizer.lr")  # every method's search has the learning rate, on a log scale
    assert "log" in lr.tags and 0 < lr.start < lr.end
    own = {k.removeprefix("wsol."): v for k, v in params.items() if k.startswith("wsol.")}
    assert own or method == "cam", f"hparams_search={method} searches none of its own keys"  # cam has none
    for key in params:  # every searched key is a key of the composed config (a typo would add a new one)
        node = cfg
        for part in key.split("."):
            assert part in node, f"hparams_search={method}: {key} is not in the config"
            node = node[part]
    spec = {k: v for k, v in cfg.wsol.items() if k != "blocks"}
    for end in ("start", "end"):  # both ends of every range are values the method accepts
        values = {k: (v.list[0 if end == "start" else -1] if hasattr(v, "list") else getattr(v, end))
                  for k, v in own.items()}
        build_method({**spec, **values})
    if method == "spg":  # every low threshold's range lies below every high one's: each pair stays ordered
        assert max(own[f"threshold_{i}l"].end for i in (1, 2, 3)) < min(own[f"threshold_{i}h"].start for i in (1, 2, 3))
