"""Attention diagnostics: ROC AUC, segment masks and pooled guide targets by hand."""

import itertools
import os
import subprocess
import sys

from absl.testing import parameterized
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d
from scipy.special import softmax

from conftest import REPO
from wtal_tf.experiments import attention_stats as diagnostics
from wtal_tf.data.datasets import Video
from wtal_tf.data.groundtruth import GTVideo, Instance
from wtal_tf.localization.outputs import StreamOutput


def pair_count_auc(scores, positive):
  wins = [1.0 if p > n else 0.5 if p == n else 0.0
          for p, n in itertools.product(scores[positive], scores[~positive])]
  return float(np.mean(wins))


class RocAucTest(parameterized.TestCase):

  @parameterized.parameters(
      ([0.1, 0.4, 0.35, 0.8], [0, 1, 0, 1], 1.0),
      ([0.3, 0.2, 0.6], [1, 0, 0], 0.5),
      ([0.5, 0.5], [1, 0], 0.5),
      ([0.9, 0.1], [0, 1], 0.0),
  )
  def test_hand_cases(self, scores, positive, expected):
    self.assertEqual(diagnostics.roc_auc(np.array(scores), np.array(positive, bool)), expected)

  def test_matches_pair_count_with_ties(self):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60) / 4.0
    positive = rng.random(60) < 0.3
    self.assertAlmostEqual(diagnostics.roc_auc(scores, positive),
                           pair_count_auc(scores, positive), places=12)

  def test_one_class_only_is_nan(self):
    self.assertTrue(np.isnan(diagnostics.roc_auc(np.ones(3), np.ones(3, bool))))


def test_segment_mask_uses_segment_centres():
  video = GTVideo("v", "test", None, (Instance("A", 0.5, 1.3), Instance("A", 2.0, 2.1)))
  # centres at 0.32, 0.96, 1.6, 2.24 s (0.64 s a segment): only 0.96 is inside.
  mask = diagnostics.segment_mask(video, 4, 0.64)
  assert mask.tolist() == [False, True, False, False]


class _Source:
  def __init__(self, arrays):
    self.arrays = arrays

  def load_stream(self, name, stream):
    return self.arrays[name][stream]


def test_attention_stats_by_hand():
  sps = 1.0
  mask = np.array([0, 1, 1, 0, 0, 1], bool)
  gt = {"v": GTVideo("v", "test", None, (Instance("B", 1.0, 3.0), Instance("B", 5.0, 6.0)))}
  rng = np.random.default_rng(1)
  cas = {s: rng.normal(size=(6, 3)) for s in ("rgb", "flow")}
  att = {"rgb": np.where(mask, 0.9, 0.2), "flow": np.where(mask, 0.7, 0.6)}

  def predict(features):
    return {s: StreamOutput(att[s], cas[s], np.array([0.1, 0.9])) for s in features}

  video = Video("v", (1,), 6, None, _Source({"v": {"rgb": np.zeros((6, 2)),
                                                   "flow": np.zeros((6, 2))}}))
  r = diagnostics.attention_stats(predict, [video], gt, ("rgb", "flow"), 2, theta=0.5,
                                  guide_sigma=1.0, max_threshold=0.5, seconds_per_segment=sps)
  # fused λ̄ = 0.5 λ_rgb + 0.5 λ_flow: 0.8 on actions, 0.4 on background
  assert r.auc == 1.0
  assert (r.action_segments, r.background_segments) == (3, 3)
  np.testing.assert_allclose(r.attention, (0.8, 0.4))
  assert r.background_above == 0.0
  fg = sum(0.5 * gaussian_filter1d(softmax(cas[s], axis=1)[:, 2], 1.0) for s in cas)
  bg = sum(0.5 * gaussian_filter1d(1 - softmax(cas[s], axis=1)[:, 0], 1.0) for s in cas)
  np.testing.assert_allclose(r.guide_fg, (fg[mask].mean(), fg[~mask].mean()), rtol=1e-5)
  np.testing.assert_allclose(r.guide_bg, (bg[mask].mean(), bg[~mask].mean()), rtol=1e-5)
  probs = sum(0.5 * softmax(cas[s], axis=1) for s in cas)  # columns: background, A, B
  np.testing.assert_allclose(r.background_prob, probs[~mask, 0].mean(), rtol=1e-12)
  np.testing.assert_allclose(r.absent_class_prob, probs[~mask, 1].mean(), rtol=1e-12)  # A


@pytest.mark.parametrize("x,m,x_test,m_test,expected", [
    ([[0.0], [0.0], [1.0], [1.0]], [0, 0, 1, 1], [[0.2], [0.9], [0.4]], [0, 1, 0], 1.0),
    ([[0.0], [1.0]], [0, 1], [[0.0], [1.0]], [1, 0], 0.0),
    # second feature is noise in training, the first decides: x0 - x1 would fail
    ([[0.0, 3.0], [1.0, 3.0], [0.0, -3.0], [1.0, -3.0]], [0, 1, 0, 1],
     [[0.1, -2.0], [0.8, 2.0], [0.3, 5.0], [0.9, -5.0]], [0, 1, 0, 1], 1.0),
])
def test_linear_probe_auc_by_hand(x, m, x_test, m_test, expected):
  pair = lambda a, b: [(np.array(a), np.array(b, bool))]
  assert diagnostics.linear_probe_auc(pair(x, m), pair(x_test, m_test)) == expected


def test_cli_prints_train_and_test_rows(small_synthetic, tmp_path):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  common = [f"--data_dir={small_synthetic}", f"--model_dir={tmp_path / 'm'}",
            "--attention_units=8"]
  subprocess.run([sys.executable, "-m", "wtal_tf.train", "--train_steps=5", "--num_vis_videos=0",
                  *common], check=True, cwd=REPO, env=env, capture_output=True)
  proc = subprocess.run([sys.executable, "-m", "wtal_tf.tools.attention_stats", *common],
                        cwd=REPO, env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert "AUC" in lines[0] and len(lines) == 4
  assert [l.split()[0] for l in lines[1:3]] == ["train", "test"]
  assert lines[3].startswith("supervised linear probe")
  # Both AUCs recomputed independently: the model's fused attention on the test
  # videos ranked by pair counting, and a least-squares probe on the stacked features.
  from wtal_tf.data import datasets as data
  from wtal_tf.modeling import checkpoints as checkpointing
  from wtal_tf import config as C
  from wtal_tf.inference.predictor import Predictor
  model, spec = checkpointing.restore(str(tmp_path / "m"))
  ds = data.load_dataset(C.DataConfig(data_dir=str(small_synthetic)))
  gt, _, _ = data.ground_truth(C.DataConfig(data_dir=str(small_synthetic)))
  predict = Predictor(model, spec["feature_dims"], C.LocalizeConfig())

  def mask(v):
    centres = (np.arange(v.num_segments) + 0.5) * 0.64
    return np.any([(centres >= i.start) & (centres < i.end) for i in gt[v.name].instances]
                  + [np.zeros(v.num_segments, bool)], axis=0)

  att, masks = [], []
  for v in ds.test:
    out = predict(v.load(model.streams))
    att.append(0.5 * out["rgb"].attention + 0.5 * out["flow"].attention)
    masks.append(mask(v))
  expected = pair_count_auc(np.concatenate(att), np.concatenate(masks))
  assert float(lines[2].split()[2]) == pytest.approx(expected, abs=5e-4 + 1e-9)

  def stacked(videos):
    x = np.concatenate([np.concatenate([v.load(("rgb", "flow"))[s] for s in ("rgb", "flow")],
                                       axis=1) for v in videos]).astype(np.float64)
    return np.c_[x, np.ones(len(x))], np.concatenate([mask(v) for v in videos])

  x, m = stacked([v for v in ds.train if v.name in gt])
  coef = np.linalg.lstsq(x, np.where(m, 1.0, -1.0), rcond=None)[0]
  x_test, m_test = stacked(ds.test)
  probe = pair_count_auc(x_test @ coef, m_test)
  assert float(lines[3].split()[-1]) == pytest.approx(probe, abs=5e-5 + 1e-9)

