"""Attention against the ground truth: does λ separate actions from background?

Localization keeps the segments whose fused attention exceeds each proposal
threshold τ (SPEC §4: 0 … 0.5), so two things matter: how well λ̄ ranks
action segments above background (frame-level ROC AUC), and where its values
sit relative to the largest τ. The guide-loss targets of Eq 6 and 7 on the
same segments show what the self-guided loss pulls λ towards, and the
frame-level class probabilities s_t = softmax(W x_t) on background show why:
how much of s_t goes to the background class and how much to a class absent
from the video. A supervised linear probe on the features themselves gives
the separability a fully supervised model would see.
"""

import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import special
from scipy import stats
import tensorflow as tf

from wtal_tf.config import Config
from wtal_tf.data import datasets as data
from wtal_tf.data import groundtruth
from wtal_tf.data.datasets import Video, multi_hot
from wtal_tf.inference.predictor import load_predictor
from wtal_tf.localization.fusion import fuse, stream_weights
from wtal_tf.modeling import losses


def segment_mask(video: groundtruth.GTVideo, num_segments: int,
                 seconds_per_segment: float) -> np.ndarray:
  """[T] bool: segments whose centre lies inside a ground-truth instance."""
  centres = (np.arange(num_segments) + 0.5) * seconds_per_segment
  mask = np.zeros(num_segments, bool)
  for inst in video.instances:
    mask |= (centres >= inst.start) & (centres < inst.end)
  return mask


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """Probability that a positive outscores a negative (ties count one half)."""
  num_pos = int(positive.sum())
  num_neg = len(positive) - num_pos
  if num_pos == 0 or num_neg == 0:
    return float("nan")
  ranks = stats.rankdata(scores)
  return float((ranks[positive].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


@dataclasses.dataclass(frozen=True)
class AttentionStats:
  videos: int
  action_segments: int
  background_segments: int
  auc: float  # fused λ̄ ranking action segments above background
  attention: tuple[float, float]  # mean λ̄ on (action, background) segments
  background_above: float  # fraction of background segments with λ̄ > the largest τ
  guide_fg: tuple[float, float]  # mean fused λ̂fg on (action, background)
  guide_bg: tuple[float, float]  # mean fused λ̂bg on (action, background)
  background_prob: float  # mean fused s_t[0] on background segments
  absent_class_prob: float  # mean fused max_c s_t[c] over classes absent from the video, same


def attention_stats(predict, videos: Sequence[Video], gt: Mapping[str, groundtruth.GTVideo],
                    streams: Sequence[str], num_classes: int, theta: float,
                    guide_sigma: float, max_threshold: float,
                    seconds_per_segment: float) -> AttentionStats:
  """Pools λ̄ and the guide targets of `videos` over their segments."""
  weights = stream_weights(streams, theta)
  att, fg_t, bg_t, s0, absent, masks = [], [], [], [], [], []
  for v in videos:
    outputs = predict(v.load(streams))
    labels = tf.constant(multi_hot(v.labels, num_classes))
    att.append(fuse(outputs, theta)[1])
    fg, bg = 0.0, 0.0
    for s, w in weights.items():
      f, b = losses.guide_targets(tf.constant(outputs[s].cas, tf.float32), labels, guide_sigma)
      fg, bg = fg + w * f.numpy(), bg + w * b.numpy()
    fg_t.append(fg)
    bg_t.append(bg)
    probs = sum(w * special.softmax(outputs[s].cas, axis=1) for s, w in weights.items())
    s0.append(probs[:, 0])
    others = np.delete(probs[:, 1:], list(v.labels), axis=1)
    absent.append(others.max(axis=1) if others.shape[1] else np.zeros(len(probs)))
    masks.append(segment_mask(gt[v.name], v.num_segments, seconds_per_segment))
  att, fg_t, bg_t, s0, absent, mask = (np.concatenate(x)
                                       for x in (att, fg_t, bg_t, s0, absent, masks))

  def split(x):
    return (float(x[mask].mean()) if mask.any() else float("nan"),
            float(x[~mask].mean()) if (~mask).any() else float("nan"))

  return AttentionStats(
      videos=len(videos), action_segments=int(mask.sum()),
      background_segments=int((~mask).sum()), auc=roc_auc(att, mask),
      attention=split(att),
      background_above=float((att[~mask] > max_threshold).mean()) if (~mask).any()
      else float("nan"),
      guide_fg=split(fg_t), guide_bg=split(bg_t),
      background_prob=split(s0)[1], absent_class_prob=split(absent)[1])


def linear_probe_auc(train: Iterable[tuple[np.ndarray, np.ndarray]],
                     test: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
  """Test ROC AUC of a least-squares linear action/background classifier.

  train, test: (features [T, d], action mask [T]) per video, consumed one
  video at a time (the normal equations are accumulated, so memory does not
  grow with the dataset). The classifier is fitted to the ground-truth
  segments of `train` (targets ±1, with a bias): full supervision, which the
  weakly supervised model never gets. A singular system gets the
  minimum-norm solution, as a least-squares fit on the stacked features would.
  """
  def with_bias(x):
    return np.c_[np.asarray(x, np.float64), np.ones(len(x))]

  gram, moment = 0.0, 0.0
  for x, mask in train:
    x = with_bias(x)
    gram, moment = gram + x.T @ x, moment + x.T @ np.where(mask, 1.0, -1.0)
  coef = np.linalg.lstsq(gram, moment, rcond=None)[0]
  scores, masks = zip(*((with_bias(x) @ coef, mask) for x, mask in test))
  return roc_auc(np.concatenate(scores), np.concatenate(masks))


def format_stats(rows: Mapping[str, AttentionStats], max_threshold: float) -> str:
  """A plain-text table, one row per named set of videos."""
  head = (f"{'':8}{'videos':>7}{'AUC':>7}{'λ̄ act':>8}{'λ̄ bg':>8}{f'bg>{max_threshold:g}':>8}"
          f"{'λ̂fg act':>10}{'λ̂fg bg':>9}{'λ̂bg act':>10}{'λ̂bg bg':>9}{'s0 bg':>8}"
          f"{'absent bg':>11}")
  lines = [head]
  for name, r in rows.items():
    lines.append(f"{name:8}{r.videos:7d}{r.auc:7.3f}{r.attention[0]:8.2f}{r.attention[1]:8.2f}"
                 f"{r.background_above:8.2f}{r.guide_fg[0]:10.2f}{r.guide_fg[1]:9.2f}"
                 f"{r.guide_bg[0]:10.2f}{r.guide_bg[1]:9.2f}{r.background_prob:8.2f}"
                 f"{r.absent_class_prob:11.2f}")
  return "\n".join(lines)


def report(cfg: Config) -> str:
  """The attention statistics of the model in cfg.train.model_dir on its training and test
  videos, then the supervised linear probe's test AUC, as printable text."""
  predict = load_predictor(cfg.train.model_dir, cfg.localize)
  streams = predict.streams
  dataset = data.load_dataset(cfg.data)
  predict.check_fits(dataset, cfg.train.model_dir)
  gt, _, _ = data.ground_truth(cfg.data)
  top = max(cfg.localize.attention_thresholds)
  splits = {"train": [v for v in dataset.train if v.name in gt],  # not --extra_train clips
            "test": dataset.test}
  rows = {name: attention_stats(
              predict, videos, gt, streams, len(dataset.classes), cfg.localize.theta,
              predict.model.loss_config.guide_sigma, top, cfg.data.seconds_per_segment)
          for name, videos in splits.items()}

  def pairs(videos):  # one video at a time
    for v in videos:
      features = v.load(streams)
      yield (np.concatenate([features[st] for st in streams], axis=1),
             segment_mask(gt[v.name], v.num_segments, cfg.data.seconds_per_segment))

  auc = linear_probe_auc(pairs(splits["train"]), pairs(splits["test"]))
  return (format_stats(rows, top) + "\n"
          + f"supervised linear probe on the features ({'+'.join(streams)}): test AUC {auc:.4f}")
