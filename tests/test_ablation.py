"""The ablation machinery on a tiny dataset: table shape, one run per row and seed."""

import csv
import json

import numpy as np

from conftest import tiny_config, write_dataset
from wtal_tf import ablation


def test_ablation_rows_are_separate_runs(tmp_path):
  root = write_dataset(tmp_path / "d", {"a": (["A"], 6), "b": (["B"], 4), "c": (["A", "B"], 5)},
                       {"x": (["A"], 7), "y": (["B"], 3)}, classes=("A", "B"))
  cfg = tiny_config(root, tmp_path / "out", train={"model_dir": str(tmp_path / "out"),
                                                   "train_steps": 6, "eval_every": 3,
                                                   "checkpoint_every": 3, "log_every": 3,
                                                   "num_vis_videos": 0})
  results = ablation.run(cfg, seeds=2)
  assert [r.name for r in results] == [row.name for row in ablation.ROWS]
  cols = ablation.columns(cfg)
  assert len(cols) == 9 + 3
  dirs = [d for r in results for d in r.run_dirs]
  assert len(set(dirs)) == len(ablation.ROWS) * 2
  for r, row in zip(results, ablation.ROWS):
    assert r.values.shape == (2, len(cols))
    for k, run_dir in enumerate(r.run_dirs):
      spec = json.loads(open(f"{run_dir}/model.json").read())
      assert tuple(spec["model"]["loss_config"]["losses"]) == row.loss["losses"]
      assert spec["model"]["seed"] == k
      # the row's numbers are its own run's final evaluation
      assert r.histories[k][-1][0] == 6
      np.testing.assert_allclose(r.values[k, :9], np.asarray(r.histories[k][-1][1]) * 100)
  table = (tmp_path / "out" / "ablation.md").read_text().splitlines()
  assert len(table) == 2 + len(ablation.ROWS) + 2 and "±" in table[2]
  with open(tmp_path / "out" / "ablation.csv") as f:
    rows = list(csv.reader(f))
  assert len(rows) == 1 + len(ablation.ROWS) * 2 and rows[0][3:] == cols
  assert (tmp_path / "out" / "ablation_curve.png").stat().st_size > 1000
  curve = list(csv.reader(open(tmp_path / "out" / "ablation_curve.csv")))
  assert {row[0] for row in curve[1:]} == set(ablation.CURVE_ROWS)


def test_select_rows():
  assert ablation.select_rows([]) == ablation.ROWS
  assert ablation.select_rows(["stpn", "Lfg+Lbg"]) == (ablation.STPN, ablation.ROWS[3])
  import pytest
  from wtal_tf.errors import UserError
  with pytest.raises(UserError, match="unknown rows"):
    ablation.select_rows(["nope"])
