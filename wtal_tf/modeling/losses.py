"""The paper's losses (§3.1, SPEC §2) as pure functions of one video's outputs.

Shapes: T segments, C foreground classes, C+1 classifier outputs (index 0 is
background). All log-probabilities go through log-softmax, so no loss is NaN
or inf for logits of any size.
"""

import math

import tensorflow as tf

from wtal_tf.config import LossConfig

GAUSSIAN_TRUNCATE = 4.0  # kernel radius in sigmas, as scipy.ndimage.gaussian_filter1d


def normalized_labels(labels: tf.Tensor) -> tf.Tensor:
  """Multi-hot labels [C] -> ŷ [C] summing to 1."""
  return labels / tf.maximum(tf.reduce_sum(labels), 1.0)


def foreground_loss(fg_logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """L_fg = -Σ_c ŷ_c log p_fg[c] (Eq 3 for multi-label videos).

  Args:
    fg_logits: [C+1] logits W x_fg of the foreground-pooled feature.
    labels: [C] multi-hot video labels (foreground classes only).
  Returns:
    Scalar.
  """
  log_p = tf.nn.log_softmax(fg_logits)[1:]
  return -tf.reduce_sum(normalized_labels(labels) * log_p)


def background_loss(bg_logits: tf.Tensor) -> tf.Tensor:
  """L_bg = -log p_bg[0] (unnumbered, after Eq 5: p_bg). bg_logits: [C+1]. Returns a scalar."""
  return -tf.nn.log_softmax(bg_logits)[0]


def stpn_classification_loss(fg_logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """STPN's multi-label loss: sigmoid cross-entropy averaged over the C classes.

  As STPN (and its reproductions) compute it: the mean, not the sum, over the
  C foreground logits, so the 1e-4 sparsity term weighs against it as in STPN.

  Args:
    fg_logits: [C+1]; the background logit (index 0) is not used.
    labels: [C] multi-hot.
  Returns:
    Scalar: (1/C) Σ_c BCE(σ(fg_logits[c+1]), labels[c]).
  """
  return tf.reduce_mean(
      tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=fg_logits[1:]))


def gaussian_kernel(sigma: float) -> list[float]:
  """Normalised Gaussian taps of radius int(GAUSSIAN_TRUNCATE sigma + 0.5), as scipy's."""
  if sigma <= 0:
    return [1.0]
  radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
  taps = [math.exp(-0.5 * (x / sigma) ** 2) for x in range(-radius, radius + 1)]
  total = sum(taps)
  return [t / total for t in taps]


def gaussian_smooth(signal: tf.Tensor, sigma: float) -> tf.Tensor:
  """Smooths each column of signal [T, K] along T; returns [T, K].

  Equals scipy.ndimage.gaussian_filter1d(signal, sigma, axis=0) with its
  default 'reflect' borders (d c b a | a b c d | d c b a), for any T >= 1,
  including T shorter than the kernel radius (the reflection repeats).
  """
  taps = gaussian_kernel(sigma)
  radius = len(taps) // 2
  t = tf.shape(signal)[0]
  offsets = tf.range(t)[:, None] + tf.range(-radius, radius + 1)[None, :]  # [T, 2r+1]
  m = tf.math.floormod(offsets, 2 * t)
  index = tf.where(m < t, m, 2 * t - 1 - m)
  windows = tf.gather(signal, index)  # [T, 2r+1, K]
  return tf.einsum("tjk,j->tk", windows, tf.constant(taps, signal.dtype))


def guide_targets(frame_logits: tf.Tensor, labels: tf.Tensor, sigma: float):
  """Top-down attention targets λ̂fg, λ̂bg (Eq 6, 7 and the footnote of Eq 6).

  Args:
    frame_logits: [T, C+1] per-segment logits W x_t (no attention).
    labels: [C] multi-hot video labels.
    sigma: Gaussian sigma in segments.
  Returns:
    (fg_target [T], bg_target [T]): fg_target is the max over the video's
    labels of each smoothed class probability; bg_target the smoothed
    complement of the background probability.
  """
  s = tf.nn.softmax(frame_logits, axis=-1)
  smoothed = gaussian_smooth(tf.concat([s[:, 1:], 1.0 - s[:, :1]], axis=1), sigma)
  class_targets = smoothed[:, :-1]
  present = tf.cast(labels, tf.bool)[None, :]
  absent = -tf.ones_like(class_targets)  # below any probability: never the max
  fg = tf.reduce_max(tf.where(present, class_targets, absent), axis=1)
  return fg, smoothed[:, -1]


def guide_loss(attention: tf.Tensor, frame_logits: tf.Tensor, labels: tf.Tensor,
               sigma: float, stop_gradient: bool = True) -> tf.Tensor:
  """L_guide = (1/T) Σ_t |λ_t - λ̂fg_t| + |λ_t - λ̂bg_t|.

  Args:
    attention: [T] λ in [0, 1].
    frame_logits: [T, C+1].
    labels: [C] multi-hot.
    sigma: Gaussian sigma in segments.
    stop_gradient: treat the targets as constants (they supervise λ, not W).
  Returns:
    Scalar.
  """
  fg, bg = guide_targets(frame_logits, labels, sigma)
  if stop_gradient:
    fg, bg = tf.stop_gradient(fg), tf.stop_gradient(bg)
  return tf.reduce_mean(tf.abs(attention - fg) + tf.abs(attention - bg))


def cluster_loss(cluster_fg: tf.Tensor, cluster_bg: tf.Tensor) -> tf.Tensor:
  """L_cluster = -log z_fg - log z_bg (Eq 8-10).

  Args:
    cluster_fg: [2] = (u_fg·x_fg, u_bg·x_fg).
    cluster_bg: [2] = (u_fg·x_bg, u_bg·x_bg).
  Returns:
    Scalar.
  """
  return -tf.nn.log_softmax(cluster_fg)[0] - tf.nn.log_softmax(cluster_bg)[1]


def sparsity_loss(attention: tf.Tensor) -> tf.Tensor:
  """STPN's L_sparse = ||λ||_1, a sum over the T segments. attention: [T]."""
  return tf.reduce_sum(tf.abs(attention))


def stream_losses(out: dict, labels: tf.Tensor, cfg: LossConfig) -> dict:
  """The enabled, unweighted loss terms of one stream's outputs.

  Args:
    out: one branch's outputs (model.py): attention [T], frame_logits [T, C+1],
      fg_logits and bg_logits [C+1], cluster_fg and cluster_bg [2].
    labels: [C] multi-hot.
    cfg: which terms.
  Returns:
    {term: scalar}, for "fg" and each enabled term of cfg.losses.
  """
  terms = {}
  if cfg.cls_loss == "sigmoid":
    terms["fg"] = stpn_classification_loss(out["fg_logits"], labels)
  else:
    terms["fg"] = foreground_loss(out["fg_logits"], labels)
  if "bg" in cfg.losses:
    terms["bg"] = background_loss(out["bg_logits"])
  if "guide" in cfg.losses:
    terms["guide"] = guide_loss(out["attention"], out["frame_logits"], labels,
                                cfg.guide_sigma, cfg.guide_stop_gradient)
  if "cluster" in cfg.losses:
    terms["cluster"] = cluster_loss(out["cluster_fg"], out["cluster_bg"])
  if "sparse" in cfg.losses:
    terms["sparse"] = sparsity_loss(out["attention"])
  return terms


def total_loss(outputs: dict, labels: tf.Tensor, cfg: LossConfig) -> dict:
  """L_total (Eq 11) summed over streams, plus every term per stream.

  Args:
    outputs: {stream: branch outputs}.
    labels: [C] multi-hot.
    cfg: which terms and their weights.
  Returns:
    {"<stream>/<term>": scalar (unweighted), "<stream>/total": weighted sum,
     "total": sum over streams}.
  """
  logs, total = {}, 0.0
  for stream, out in outputs.items():
    terms = stream_losses(out, labels, cfg)
    stream_total = tf.add_n([cfg.weight(k) * v for k, v in terms.items()])
    logs.update({f"{stream}/{k}": v for k, v in terms.items()})
    logs[f"{stream}/total"] = stream_total
    total = total + stream_total
  logs["total"] = total
  return logs
