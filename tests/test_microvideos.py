"""Supplementary weakly-labelled videos: format, sampling, generator, bad input."""

import collections
import dataclasses
import csv
import pathlib

import numpy as np
import pytest

from conftest import config_of_flagfile, tiny_config, write_dataset
from wtal_tf import cli
from wtal_tf.experiments import ablation
from wtal_tf import config as C
from wtal_tf.data import datasets as data
from wtal_tf.training import input_pipeline
from wtal_tf.experiments import microvideos as mv
from wtal_tf.data import synthetic
from wtal_tf.errors import UserError


def write_extra(root, videos, d=4):
  """videos: {name: (labels, T)} -> root/labels.csv and root/{rgb,flow}/<name>.npy."""
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  rows = ["video,labels"] + [f"{n},{';'.join(l)}" for n, (l, _) in videos.items()]
  (root / "labels.csv").write_text("\n".join(rows) + "\n")
  for name, (_, t) in videos.items():
    for s in ("rgb", "flow"):
      (root / s).mkdir(exist_ok=True)
      np.save(root / s / f"{name}.npy", np.ones((t, d), np.float32))
  return root


@pytest.fixture
def base(tmp_path):
  return write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                       classes=("A", "B"))


def test_extra_videos_are_seen_each_epoch(base, tmp_path):
  extra = write_extra(tmp_path / "mv", {"m1": (["B"], 1), "m2": (["A", "B"], 2), "m3": (["A"], 7)})
  ds = data.load_dataset(C.DataConfig(data_dir=str(base), extra_train=(str(extra),)))
  assert ds.num_extra == 3 and [v.labels for v in ds.train[2:]] == [(1,), (0, 1), (0,)]
  seen = collections.Counter()

  class CountingCache(input_pipeline.FeatureCache):
    def load(self, video):
      seen[video.name] += 1
      return super().load(video)

  epochs, per_epoch = 3, 2 + 2 * 3  # extra_weight 2: each extra video twice an epoch
  order = input_pipeline.training_order(2, 3, 2.0, seed=1, start_step=0,
                                        num_steps=epochs * per_epoch)
  stream = input_pipeline.training_dataset(ds.train, order, 2, ds.streams, ds.feature_dims,
                                          CountingCache(ds.streams, False))
  lengths = collections.Counter(int(x["rgb"].shape[0]) for x, _ in stream)
  assert seen == {"a": 3, "b": 3, "m1": 6, "m2": 6, "m3": 6}
  assert lengths == {4: 3, 3: 3, 1: 6, 2: 6, 7: 6}


@pytest.mark.parametrize("videos,edit,message", [
    ({"m1": (["Q"], 2)}, None, "labels not in the class list: ['Q']"),
    ({"m1": (["A"], 2)}, "drop_file", "feature file not found"),
    ({"m1": (["A"], 2)}, "wrong_dim", "feature dimension 9, expected 4"),
    ({"m1": (["A"], 2)}, "no_csv", "labels.csv: extra training labels not found"),
    ({"m1": (["A"], 2)}, "dup", "duplicate video"),
    ({"m1": ([], 2)}, None, "no labels"),
    ({"m1": (["A"], 2)}, "latin1", "labels.csv: not UTF-8 text (byte 21: "),
    ({"m1": (["A"], 2)}, "empty", "labels.csv: expected a header 'video,labels'"),
    # labels separated by commas: the second was dropped without a word
    ({"m1": (["A"], 2)}, "commas", "labels.csv: line 2 ('m1'): 1 more field(s) than the "
     "header 'video,labels' (labels are separated by ';')"),
])
def test_bad_extra_input_fails_before_training(base, tmp_path, videos, edit, message):
  root = write_extra(tmp_path / "mv", videos)
  if edit == "drop_file":
    (root / "flow" / "m1.npy").unlink()
  elif edit == "wrong_dim":
    np.save(root / "rgb" / "m1.npy", np.ones((2, 9), np.float32))
  elif edit == "no_csv":
    (root / "labels.csv").unlink()
  elif edit == "dup":
    (root / "labels.csv").write_text("video,labels\nm1,A\nm1,A\n")
  elif edit == "latin1":  # (it was a UnicodeDecodeError traceback)
    (root / "labels.csv").write_bytes("video,labels\nm1,A;Café\n".encode("latin-1"))
  elif edit == "empty":
    (root / "labels.csv").write_text("")
  elif edit == "commas":
    (root / "labels.csv").write_text("video,labels\nm1,A,B\n")
  with pytest.raises(UserError) as e:
    data.load_dataset(C.DataConfig(data_dir=str(base), extra_train=(str(root),)))
  assert message in str(e.value) and str(root) in str(e.value)


def test_extra_labels_from_excel_and_invalid_extra_videos_skipped(base, tmp_path, caplog):
  """Found by a new user: a labels.csv with a byte-order mark (Excel's "CSV UTF-8") was
  "expected a header 'video,labels'"; --skip_invalid_videos did not apply to extra videos."""
  root = write_extra(tmp_path / "mv", {"m1": (["A"], 2), "m2": (["B"], 3)})
  (root / "labels.csv").write_bytes("\ufeffvideo,labels\r\nm1,A\r\nm2,B\r\n".encode("utf-8"))
  cfg = C.DataConfig(data_dir=str(base), extra_train=(str(root),))
  assert [v.name for v in data.load_dataset(cfg).train[-2:]] == ["m1", "m2"]
  np.save(root / "rgb" / "m2.npy", np.ones((3, 9), np.float32))
  with pytest.raises(UserError, match=r"m2.npy: feature dimension 9, expected 4 .*\(--skip_"
                     r"invalid_videos leaves such videos out\)$"):
    data.load_dataset(cfg)
  caplog.set_level("WARNING")
  ds = data.load_dataset(dataclasses.replace(cfg, skip_invalid_videos=True))
  assert [v.name for v in ds.train[-1:]] == ["m1"] and ds.num_extra == 1
  assert len(ds.skipped) == 1 and "m2.npy: feature dimension 9" in ds.skipped[0]
  assert "skipped: " in caplog.text


def test_generated_microvideos_rebalance_classes(tmp_path):
  cfg = synthetic.SyntheticConfig(num_micro=300, feature_dim=4)
  root = synthetic.generate_microvideos(cfg, str(tmp_path / "micro"))
  with open(f"{root}/labels.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 300
  counts = collections.Counter(r["labels"] for r in rows)
  assert counts["BaseballPitch"] > 3 * counts["Diving"]  # 30 vs 499 training instances
  lengths = [np.load(f"{root}/rgb/{r['video']}.npy").shape[0] for r in rows]
  seconds = np.array(lengths) * cfg.seconds_per_segment
  assert seconds.min() >= 6 - cfg.seconds_per_segment and seconds.max() <= 15 + 1e-9


def test_mv_rows_and_per_class_change(base, tmp_path):
  extra = write_extra(tmp_path / "mv", {"m1": (["B"], 3)})
  cfg = tiny_config(base, tmp_path / "out", train={"model_dir": str(tmp_path / "out"),
                                                   "train_steps": 4, "checkpoint_every": 4,
                                                   "log_every": 2, "num_vis_videos": 0})
  rows = (ablation.Row(mv.WITHOUT, data={"extra_train": ()}),
          ablation.Row(mv.WITH, data={"extra_train": (str(extra),)}))
  results = ablation.run(cfg, 1, rows, prefix="mv", flagfile=lambda cfg: "")
  assert [r.name for r in results] == [mv.WITHOUT, mv.WITH]
  change = mv.per_class_change(results, ["A"], 0.5)
  assert change[0][0] == "A" and all(np.isfinite(change[0][1:]))
  assert mv.rarest_classes(cfg, 1) == ["A"]  # A and B have one instance each: by name
  table = (tmp_path / "out" / "mv.md").read_text().splitlines()
  assert table[0].startswith("| | 0.1 |")  # rows of models, not of losses (docs/microvideos.md)
  assert [l.split(" | ")[0] for l in table[2:4]] == [f"| {mv.WITHOUT}", f"| {mv.WITH}"]


def test_mv_without_a_dataset_says_so_before_asking_for_extra_train(base, tmp_path):
  """Found by a researcher: `./run.sh mv thumos14` without the data said --extra_train is
  required, where `./run.sh thumos14` names the dataset's layout."""
  cfg = tiny_config(tmp_path / "none", tmp_path / "out")
  with pytest.raises(UserError, match=r"none: data directory not found; expected "):
    mv.compare(cfg, 1, flagfile=cli.config_flagfile)
  with pytest.raises(UserError, match=r"^--extra_train is required"):
    mv.compare(tiny_config(base, tmp_path / "out"), 1, flagfile=cli.config_flagfile)


def test_mv_checks_the_supplementary_videos_before_training_anything(base, tmp_path):
  extra = write_extra(tmp_path / "mv", {"m1": (["Q"], 3)})
  cfg = tiny_config(base, tmp_path / "out", data={"extra_train": (str(extra),)})
  with pytest.raises(UserError, match=r"labels.csv: line 2 \('m1'\): labels not in the class "
                     r"list: \['Q'\] \(the dataset's labels unless --class_list names more\)"):
    mv.compare(cfg, 1, flagfile=cli.config_flagfile)
  assert not (tmp_path / "out").exists()  # no model trained, nothing written


def test_mv_table_marks_a_rare_class_without_test_instances(base, tmp_path):
  extra = write_extra(tmp_path / "mv", {"m1": (["B"], 3)})
  cfg = tiny_config(base, tmp_path / "out", data={"extra_train": (str(extra),)},
                    train={"model_dir": str(tmp_path / "out"), "train_steps": 2,
                           "checkpoint_every": 2, "num_vis_videos": 0})
  text = mv.compare(cfg, 1, flagfile=cli.config_flagfile)  # test instances of A only
  assert "| B | – | – | no test instances |" in text and "nan" not in text
  assert (tmp_path / "out" / "mv.md").read_text() == text  # (written once, by ablation.run)
  # Each run's flags.cfg is its row's: without the extra videos, then with them.
  recorded = sorted((tmp_path / "out").glob("*/seed0/flags.cfg"))
  assert sorted(config_of_flagfile(p).data.extra_train for p in recorded) == [
      (), (str(extra),)]
  assert [l for l in text.splitlines() if l.startswith("| A |")]
