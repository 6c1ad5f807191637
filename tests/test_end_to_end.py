"""End to end on small generated data: training learns, the CLI pipeline writes everything."""

import json
import os
import subprocess
import sys

import numpy as np
from scipy.stats import rankdata

from conftest import REPO, SMALL_SYNTHETIC
from wtal_tf.modeling import checkpoints as checkpointing
from wtal_tf import config as C
from wtal_tf.data import datasets as data
from wtal_tf.data import groundtruth
from wtal_tf.localization import fusion
from wtal_tf.training import trainer as training
from wtal_tf.inference.predictor import Predictor


def frame_auc(scores, labels):
  """P(score of an action segment > score of a background segment), ties half."""
  ranks = rankdata(scores)
  n1 = labels.sum()
  n0 = len(labels) - n1
  return (ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def test_training_learns_to_attend_to_planted_actions(small_synthetic, tmp_path):
  cfg = C.Config(data=C.DataConfig(data_dir=small_synthetic),
                 model=C.ModelConfig(attention_units=32),
                 train=C.TrainConfig(model_dir=str(tmp_path / "m"), train_steps=400,
                                     learning_rate=1e-3, log_every=50, checkpoint_every=400,
                                     num_vis_videos=0))
  result = training.train(cfg)
  losses = [loss for _, loss in result.loss_history]
  assert losses[-1] < 0.9 * losses[0], losses
  model, spec = checkpointing.restore(str(tmp_path / "m"))
  ds = data.load_dataset(cfg.data)
  # Segments of all videos (training never saw any): frame-level ground truth.
  gt = groundtruth.load_activitynet(os.path.join(small_synthetic, "gt.json"))
  predict = Predictor(model, spec["feature_dims"], cfg.localize)
  sps = SMALL_SYNTHETIC.seconds_per_segment
  scores, labels = [], []
  for v in ds.train + ds.test:
    _, attention, _ = fusion.fuse(predict(v.load(ds.streams)), 0.5)
    y = np.zeros(v.num_segments, bool)
    for inst in gt[v.name].instances:
      y[int(round(inst.start / sps)):int(round(inst.end / sps))] = True
    scores.append(attention)
    labels.append(y)
  auc = frame_auc(np.concatenate(scores), np.concatenate(labels))
  assert auc > 0.75, auc


def test_pipeline_cli_writes_detections_for_every_test_video(small_synthetic, tmp_path):
  model_dir = tmp_path / "model"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.run(
      [sys.executable, "-m", "wtal_tf.pipeline", "--flagfile=flags/synthetic.cfg",
       f"--data_dir={small_synthetic}", f"--model_dir={model_dir}", "--train_steps=30",
       "--eval_every=10", "--checkpoint_every=10", "--log_every=10", "--attention_units=8"],
      capture_output=True, text=True, cwd=REPO, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "mAP (%)" in proc.stdout and "avg 0.1:0.7" in proc.stdout
  detections = json.loads((model_dir / "detections_test.json").read_text())
  gt = json.loads(open(os.path.join(small_synthetic, "gt.json")).read())["database"]
  test_videos = {k for k, v in gt.items() if v["subset"] == "test"}
  assert set(detections["results"]) == test_videos
  for dets in detections["results"].values():
    for d in dets:
      assert set(d) == {"label", "score", "segment"} and d["segment"][0] <= d["segment"][1]
  numbers = json.loads((model_dir / "detections_test.eval.json").read_text())
  assert set(numbers["mAP"]) == {f"{t / 10:g}" for t in range(1, 10)}
  flags_saved = (model_dir / "flags.cfg").read_text()
  assert "--train_steps=30" in flags_saved and "--learning_rate=0.001" in flags_saved
  assert any(f.startswith("events") for f in os.listdir(model_dir / "train"))
  assert any(f.startswith("events") for f in os.listdir(model_dir / "eval"))
  spec = json.loads((model_dir / "model.json").read_text())
  assert spec["feature_dims"] == {"rgb": 16, "flow": 16}


def test_the_readme_python_example_runs(small_synthetic, tmp_path):
  """README, Python API, run as written from a folder holding runs/synthetic (a tiny
  model trained here) and data/synthetic."""
  readme = (REPO / "README.md").read_text()
  code = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "synthetic").symlink_to(small_synthetic)
  training.train(C.Config(data=C.DataConfig(data_dir=str(small_synthetic)),
                          train=C.TrainConfig(model_dir=str(tmp_path / "runs" / "synthetic"),
                                              train_steps=10, eval_every=0,
                                              num_vis_videos=0),
                          model=C.ModelConfig(attention_units=8)))
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        cwd=tmp_path, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  detections, losses = proc.stdout.strip().splitlines()[-2:]
  assert detections.startswith("[{'label': ") and "'segment': [" in detections
  assert np.isfinite(json.loads(losses)).all()
  assert (tmp_path / "model.keras").is_file()  # (and loaded back: the example asserts it)
  assert (tmp_path / "served" / "saved_model.pb").is_file()
