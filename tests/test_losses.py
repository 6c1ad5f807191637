"""Each loss against an independent numpy computation of SPEC §2 on tiny inputs."""

from absl.testing import parameterized
import numpy as np
import scipy.ndimage
import tensorflow as tf

from wtal_tf import config as C
from wtal_tf.modeling import losses


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_softmax(z):
  return np.exp(np_log_softmax(z))


class LossTest(parameterized.TestCase):

  @parameterized.parameters(([1, 0, 0],), ([0, 1, 1],), ([1, 1, 1],))
  def test_foreground_loss(self, labels):
    logits = np.array([0.3, -1.0, 2.0, 0.5])
    y = np.array(labels, np.float64)
    expected = -(y / y.sum() * np_log_softmax(logits)[1:]).sum()
    got = losses.foreground_loss(tf.constant(logits, tf.float32), tf.constant(y, tf.float32))
    self.assertAlmostEqual(float(got), expected, places=5)

  def test_foreground_loss_single_label_is_eq3(self):
    logits = np.array([0.1, 0.2, 3.0])
    p = np_softmax(logits)
    got = losses.foreground_loss(tf.constant(logits, tf.float32), tf.constant([0.0, 1.0]))
    self.assertAlmostEqual(float(got), -np.log(p[2]), places=5)

  def test_background_loss(self):
    logits = np.array([0.5, 1.5, -2.0])
    got = losses.background_loss(tf.constant(logits, tf.float32))
    self.assertAlmostEqual(float(got), -np.log(np_softmax(logits)[0]), places=5)

  def test_stpn_loss(self):
    logits = np.array([9.0, 0.5, -1.0, 2.0])
    y = np.array([1.0, 0.0, 1.0])
    sig = 1 / (1 + np.exp(-logits[1:]))
    expected = -(y * np.log(sig) + (1 - y) * np.log(1 - sig)).mean()  # mean over C = 3
    got = losses.stpn_classification_loss(tf.constant(logits, tf.float32), tf.constant(y, tf.float32))
    self.assertAlmostEqual(float(got), expected, places=5)

  @parameterized.product(t=[1, 2, 3, 5, 17, 60], sigma=[0.5, 1.0, 2.0, 3.0])
  def test_gaussian_matches_scipy(self, t, sigma):
    x = np.random.default_rng(t).random((t, 3))
    expected = scipy.ndimage.gaussian_filter1d(x, sigma, axis=0)  # mode='reflect'
    got = losses.gaussian_smooth(tf.constant(x, tf.float64), sigma).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)

  def test_gaussian_kernel_radius(self):
    self.assertLen(losses.gaussian_kernel(1.0), 9)  # radius int(4*1+0.5) = 4
    self.assertLen(losses.gaussian_kernel(2.3), 2 * 9 + 1)  # int(9.7) = 9
    self.assertAlmostEqual(sum(losses.gaussian_kernel(2.3)), 1.0)

  @parameterized.parameters((1, [0, 1, 0]), (2, [1, 0, 1]), (3, [0, 1, 1]), (12, [1, 1, 0]),
                            (40, [0, 0, 1]))
  def test_guide_loss(self, t, labels):
    rng = np.random.default_rng(t)
    logits = rng.normal(size=(t, 4)) * 3
    att = rng.random(t)
    y = np.array(labels, np.float64)
    s = np_softmax(logits)
    smooth = lambda v: scipy.ndimage.gaussian_filter1d(v, 1.0)
    fg = np.max([smooth(s[:, c + 1]) for c in np.flatnonzero(y)], axis=0)
    bg = smooth(1 - s[:, 0])
    expected = np.mean(np.abs(att - fg) + np.abs(att - bg))
    got = losses.guide_loss(tf.constant(att), tf.constant(logits), tf.constant(y), 1.0)
    self.assertAlmostEqual(float(got), expected, places=10)

  def test_guide_targets_are_constants(self):
    logits = tf.Variable(np.random.default_rng(0).normal(size=(6, 3)))
    att = tf.Variable(np.full(6, 0.5))
    y = tf.constant([1.0, 0.0])
    with tf.GradientTape(persistent=True) as tape:
      stopped = losses.guide_loss(att, logits, y, 1.0, stop_gradient=True)
      flowing = losses.guide_loss(att, logits, y, 1.0, stop_gradient=False)
    self.assertIsNone(tape.gradient(stopped, logits))
    self.assertIsNotNone(tape.gradient(stopped, att))
    self.assertIsNotNone(tape.gradient(flowing, logits))

  def test_cluster_loss(self):
    fg, bg = np.array([1.0, -0.5]), np.array([0.2, 2.0])
    z_fg = np.exp(fg[0]) / np.exp(fg).sum()
    z_bg = np.exp(bg[1]) / np.exp(bg).sum()
    got = losses.cluster_loss(tf.constant(fg), tf.constant(bg))
    self.assertAlmostEqual(float(got), -np.log(z_fg) - np.log(z_bg), places=10)

  def test_sparsity_is_l1_sum(self):
    self.assertAlmostEqual(float(losses.sparsity_loss(tf.constant([0.1, 0.5, 0.25]))), 0.85,
                           places=6)

  def test_large_logits_are_finite(self):
    big = tf.constant([1e4, -1e4, 5e3, 0.0])
    y = tf.constant([1.0, 0.0, 1.0])
    frame = tf.constant([[1e4, -1e4, 0.0, 3e3]] * 3)
    att = tf.constant([0.0, 1.0, 0.5])
    values = [losses.foreground_loss(big, y), losses.background_loss(-big),
              losses.stpn_classification_loss(big, y),
              losses.guide_loss(att, frame, y, 1.0), losses.cluster_loss(big[:2], -big[:2])]
    for v in values:
      self.assertTrue(np.isfinite(float(v)), values)
    # log p = logit - 1e4 for classes 1 and 3 (logits -1e4 and 0)
    self.assertAlmostEqual(float(values[0]), 0.5 * (2e4 + 1e4), delta=1.0)

  def test_total_is_weighted_sum_over_streams(self):
    rng = np.random.default_rng(1)
    out = {s: {"attention": tf.constant(rng.random(5)),
               "frame_logits": tf.constant(rng.normal(size=(5, 3))),
               "fg_logits": tf.constant(rng.normal(size=3)),
               "bg_logits": tf.constant(rng.normal(size=3)),
               "cluster_fg": tf.constant(rng.normal(size=2)),
               "cluster_bg": tf.constant(rng.normal(size=2))} for s in ("rgb", "flow")}
    cfg = C.LossConfig(losses=("fg", "bg", "guide", "cluster", "sparse"), alpha=0.1, beta=0.2,
                       gamma=0.3, sparsity_weight=0.01)
    logs = losses.total_loss(out, tf.constant([0.0, 1.0], tf.float64), cfg)
    w = {"fg": 1, "bg": 0.1, "guide": 0.2, "cluster": 0.3, "sparse": 0.01}
    for s in ("rgb", "flow"):
      expected = sum(w[k] * float(logs[f"{s}/{k}"]) for k in w)
      self.assertAlmostEqual(float(logs[f"{s}/total"]), expected, places=10)
    self.assertAlmostEqual(float(logs["total"]),
                           float(logs["rgb/total"]) + float(logs["flow/total"]), places=10)

  def test_fg_only_and_unknown(self):
    self.assertEqual(C.LossConfig(losses=("bg",)).losses, ("fg", "bg"))
    with self.assertRaisesRegex(ValueError,
                                "--losses: .nope. is not one of fg,bg,guide,cluster,sparse"):
      C.LossConfig(losses=("fg", "nope"))
