"""The seed paper's proposals (§3.2, Eq 12; SPEC §4): runs of a signal above each threshold.

"attention": the fused attention λ̄ thresholded at every τ, each run a
proposal for every kept class; "tcam": the fused λ·σ(T-CAM) of each kept
class at the same thresholds. Either way a proposal's score is Eq 12 (the
mean fused weighted T-CAM over it), then class-wise NMS.
"""

from typing import Mapping, Sequence

import numpy as np

from wtal_tf.config import LocalizeConfig
from wtal_tf.localization import detections
from wtal_tf.localization import fusion
from wtal_tf.localization import nms
from wtal_tf.localization.outputs import StreamOutput


def connected_components(signals: np.ndarray, thresholds: Sequence[float]):
  """Maximal runs of signal > τ, for every row of signals [R, T] and every τ.

  Returns (rows, starts, ends): arrays over all runs, ends inclusive.
  """
  signals = np.atleast_2d(signals)
  num_rows, t = signals.shape
  thr = np.asarray(thresholds, signals.dtype)
  mask = signals[:, None, :] > thr[None, :, None]  # [R, K, T]
  rows, starts, ends = detections.true_runs(mask.reshape(num_rows * len(thr), t))
  return rows // len(thr), starts, ends


def unique_proposals(rows, starts, ends):
  """Drops proposals repeated across thresholds (same row, start and end)."""
  key = np.stack([rows, starts, ends], axis=1)
  key = np.unique(key, axis=0)
  return key[:, 0], key[:, 1], key[:, 2]


def interval_scores(wcas: np.ndarray, starts, ends, classes) -> np.ndarray:
  """Eq 12: mean of the fused weighted T-CAM over [start, end] for each class.

  wcas: [T, C] with wcas[t, c] = Σ_streams w_s λ_t^s (w_c·x_t^s).
  starts, ends, classes: [N]. Returns [N].
  """
  prefix = np.concatenate([np.zeros((1, wcas.shape[1]), wcas.dtype),
                           np.cumsum(wcas, axis=0, dtype=np.float64)])
  return (prefix[ends + 1, classes] - prefix[starts, classes]) / (ends - starts + 1)


def localize(outputs: Mapping[str, StreamOutput], cfg: LocalizeConfig) -> detections.Detections:
  """Detections of one video from the fused attention ("attention") or T-CAM ("tcam")."""
  probs, attention, wcas = fusion.fuse(outputs, cfg.theta)
  kept = detections.select_classes(probs, cfg.class_threshold)
  if cfg.proposal_source == "tcam":
    signal = fusion.tcam_signal(outputs, cfg.theta, kept)
    rows, starts, ends = unique_proposals(*connected_components(signal, cfg.attention_thresholds))
    classes = kept[rows]
  else:
    _, starts, ends = unique_proposals(
        *connected_components(attention[None], cfg.attention_thresholds))
    classes = np.repeat(kept, len(starts))
    starts, ends = np.tile(starts, len(kept)), np.tile(ends, len(kept))
  scores = interval_scores(wcas, starts, ends, classes)
  return nms.classwise_nms(classes, starts, ends, scores, cfg.nms_threshold)
