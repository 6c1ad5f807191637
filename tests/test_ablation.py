"""The ablation machinery on a tiny dataset: table shape, one run per row and seed."""

import csv
import json

import numpy as np

from conftest import config_of_flagfile, tiny_config, write_dataset
from wtal_tf import cli
from wtal_tf.experiments import ablation
from wtal_tf.training import trainer as training


def tiny(tmp_path, **train):
  root = write_dataset(tmp_path / "d", {"a": (["A"], 6), "b": (["B"], 4), "c": (["A", "B"], 5)},
                       {"x": (["A"], 7), "y": (["B"], 3)}, classes=("A", "B"))
  return tiny_config(root, tmp_path / "out", train={"model_dir": str(tmp_path / "out"),
                                                    "checkpoint_every": 3, "log_every": 3,
                                                    "num_vis_videos": 0, **train})


def spy_evaluations(monkeypatch):
  """Records (model dir, cls_loss of the model, proposal source used) of every evaluation."""
  calls = []
  original = training.evaluate_model

  def spy(predictor, dataset, cfg, keep_outputs=()):
    cls_loss = predictor.model.loss_config.cls_loss
    calls.append((cfg.train.model_dir, cls_loss,
                  cfg.localize.for_model(cls_loss).proposal_source))
    return original(predictor, dataset, cfg, keep_outputs)

  monkeypatch.setattr(training, "evaluate_model", spy)
  return calls


def test_ablation_rows_are_separate_runs(tmp_path, monkeypatch):
  # Base flags that must not leak into the seed model's rows.
  cfg = tiny(tmp_path, train_steps=6, eval_every=3, seed=5).replace(
      loss={"cls_loss": "sigmoid"}, localize={"proposal_source": "tcam"})
  calls = spy_evaluations(monkeypatch)
  results = ablation.run(cfg, seeds=2, flagfile=cli.config_flagfile)
  assert [r.name for r in results] == [row.name for row in ablation.ROWS]
  cols = ablation.columns(cfg)
  assert len(cols) == 9 + 3
  multi = results[-1]
  assert multi.name.startswith("STPN, multi-threshold")
  stpn = results[[r.name for r in results].index(ablation.STPN.name)]
  # The multi-threshold row evaluates STPN's trained models (same training).
  assert multi.run_dirs == stpn.run_dirs
  dirs = [d for r in results for d in r.run_dirs]
  assert len(set(dirs)) == (len(ablation.ROWS) - 1) * 2
  for r, row in zip(results, ablation.ROWS):
    assert r.values.shape == (2, len(cols))
    is_stpn = row in ablation.EXTRA_ROWS[1:] or row in ablation.PAPER_ROWS[:2]
    for k, run_dir in enumerate(r.run_dirs):
      assert run_dir.endswith(f"seed{5 + k}")  # folders named by the real seed
      spec = json.loads(open(f"{run_dir}/model.json").read())
      loss = spec["model"]["loss_config"]
      assert tuple(loss["losses"]) == row.loss["losses"]
      assert loss["cls_loss"] == ("sigmoid" if is_stpn else "softmax")
      assert spec["model"]["seed"] == 5 + k
      # its flags.cfg gives the row's config (the one it was trained with: STPN's, for
      # the multi-threshold row that evaluates STPN's runs)
      trained_by = next(row for row, res in zip(ablation.ROWS, results)
                        if res.run_dirs[k] == run_dir)
      recorded = config_of_flagfile(f"{run_dir}/flags.cfg")
      assert recorded.loss == cfg.replace(loss=trained_by.loss).loss
      assert recorded.localize == cfg.replace(localize=trained_by.localize).localize
      assert (recorded.train.model_dir, recorded.train.seed) == (run_dir, 5 + k)
      # the row's numbers are its own run's final evaluation
      assert r.histories[k][-1][0] == 6
      np.testing.assert_allclose(r.values[k, :9], np.asarray(r.histories[k][-1][1]) * 100)
      expected_source = row.localize["proposal_source"]
      assert expected_source == ("stpn" if row in ablation.PAPER_ROWS[:2] else
                                 "tcam" if is_stpn else "attention")
      # the final evaluation of this row and seed used that proposal source
      final = [c for c in calls if c[0] == run_dir and c[2] == expected_source]
      assert final and final[-1][1] == loss["cls_loss"], (row.name, calls)
  table = (tmp_path / "out" / "ablation.md").read_text().splitlines()
  assert len(table) == 2 + len(ablation.ROWS) + 1 + 2 and "±" in table[2]
  assert "extra rows" in table[2 + len(ablation.PAPER_ROWS)]
  with open(tmp_path / "out" / "ablation.csv") as f:
    rows = list(csv.reader(f))
  assert len(rows) == 1 + len(ablation.ROWS) * 2 and rows[0][3:] == cols
  # (found by a researcher: the seed column held 0, 1 under --seed=5)
  assert all(r[2].endswith(f"seed{r[1]}") for r in rows[1:])
  assert {r[1] for r in rows[1:]} == {"5", "6"}
  assert (tmp_path / "out" / "ablation_curve.png").stat().st_size > 1000
  assert ablation.written_files(results) == ["ablation.md", "ablation.csv",
                                             "ablation_curve.png", "ablation_curve.csv"]
  assert ablation.written_files([r for r in results if r.name not in ablation.CURVE_ROWS]) == [
      "ablation.md", "ablation.csv"]
  curve = list(csv.reader(open(tmp_path / "out" / "ablation_curve.csv")))
  assert {row[0] for row in curve[1:]} == set(ablation.CURVE_ROWS)
  assert {row[1] for row in curve[1:]} == {"5", "6"}
  # A run of other rows into the same folder: its table, and no curve of the earlier run
  # beside it (found by a new user: the folder mixed two runs).
  others = [r for r in results if r.name not in ablation.CURVE_ROWS]
  ablation.write_curve(others, cfg, str(tmp_path / "out"), "ablation")
  assert not (tmp_path / "out" / "ablation_curve.png").exists()
  assert not (tmp_path / "out" / "ablation_curve.csv").exists()


def test_the_multi_threshold_row_evaluates_stpns_models_from_a_run_before_or_after(
    tmp_path, monkeypatch):
  """Found by a researcher: the multi-threshold row run on its own, after a run of STPN,
  trained copies of STPN's models in folders of its own (reuse was within one run)."""
  multi = ablation.EXTRA_ROWS[-1]
  cfg = tiny(tmp_path, train_steps=3, eval_every=0)
  out = tmp_path / "out"
  [stpn] = ablation.run(cfg, 1, rows=(ablation.STPN,), flagfile=cli.config_flagfile)
  model = out / "lfg_lsparse_stpn" / "seed0"
  before = {p.name: p.stat().st_mtime_ns for p in (model / "checkpoints").iterdir()}
  calls = spy_evaluations(monkeypatch)
  [again] = ablation.run(cfg, 1, rows=(multi,), flagfile=cli.config_flagfile)
  assert again.run_dirs == stpn.run_dirs == [str(model)]
  assert not (out / ablation.slug(multi.name)).exists()
  assert {p.name: p.stat().st_mtime_ns for p in (model / "checkpoints").iterdir()} == before
  assert (str(model), "sigmoid", "tcam") in calls  # evaluated with its own proposals
  assert config_of_flagfile(model / "flags.cfg").localize.proposal_source == "stpn"  # STPN's
  # Run first, before STPN, on a fresh folder: STPN's folder trains, STPN evaluates there.
  fresh = cfg.replace(train={"model_dir": str(tmp_path / "fresh")})
  results = ablation.run(fresh, 1, rows=(multi, ablation.STPN), flagfile=lambda cfg: "")
  assert [r.run_dirs for r in results] == [[str(tmp_path / "fresh" / "lfg_lsparse_stpn" /
                                             "seed0")]] * 2
  assert sorted(p.name for p in (tmp_path / "fresh").iterdir() if p.is_dir()) == [
      "lfg_lsparse_stpn"]


def test_stpn_rows_ignore_a_softmax_base(tmp_path, monkeypatch):
  cfg = tiny(tmp_path, train_steps=2).replace(
      loss={"cls_loss": "softmax"}, localize={"proposal_source": "attention"})
  calls = spy_evaluations(monkeypatch)
  results = ablation.run(cfg, seeds=1, rows=ablation.PAPER_ROWS[:2], flagfile=lambda cfg: "")
  assert [c[1:] for c in calls] == [("sigmoid", "stpn")] * 2
  assert [c[0] for c in calls] == [r.run_dirs[0] for r in results]


def test_select_rows():
  assert ablation.select_rows([]) == ablation.ROWS
  assert ablation.select_rows(["lfg_lsparse_stpn", "Lfg+Lbg"]) == (ablation.STPN,
                                                                    ablation.ROWS[3])
  assert ablation.select_rows(["stpn", "lfg"]) == (ablation.STPN, ablation.PAPER_ROWS[0])
  assert ablation.select_rows(["stpn", "lfg", "lfg_lsparse_stpn", "lfg"]) == (
      ablation.STPN, ablation.PAPER_ROWS[0])  # each once (a row named twice was two rows)
  import pytest
  from wtal_tf.errors import UserError
  with pytest.raises(UserError, match=r"unknown rows .* \(or 'stpn' for the STPN row\)$"):
    ablation.select_rows(["nope"])
