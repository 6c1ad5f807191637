"""What both proposal methods share: detections, stream fusion, runs, NMS, seconds.

Everything here is numpy on the host: a handful of array operations per video.
"""

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import special

from wtal_tf.localization.outputs import StreamOutput


@dataclasses.dataclass(frozen=True)
class Detections:
  """Detections of one video, in segment units: each covers [start, end + 1).

  Integers (inclusive [start, end]) for the attention and T-CAM proposals;
  fractional for STPN's proposals, which come from upsampled signals.
  """
  classes: np.ndarray  # [N] int, 0-based foreground class index
  starts: np.ndarray  # [N] int, or float for STPN proposals
  ends: np.ndarray  # [N] inclusive: the detection ends at end + 1 segments
  scores: np.ndarray  # [N] float

  def __len__(self):
    return len(self.scores)


def stream_weights(streams: Sequence[str], theta: float) -> dict[str, float]:
  """θ for RGB and 1-θ for flow; a single stream gets weight 1."""
  if len(streams) == 1:
    return {streams[0]: 1.0}
  return {"rgb": theta, "flow": 1.0 - theta}


def select_classes(probs: np.ndarray, threshold: float) -> np.ndarray:
  """Foreground classes with p >= threshold; else the single most probable one."""
  kept = np.flatnonzero(probs >= threshold)
  return kept if len(kept) else np.array([int(np.argmax(probs))])


def true_runs(mask: np.ndarray):
  """Maximal runs of True along the last axis of mask [R, T].

  Returns (rows, starts, ends): arrays over all runs, ends inclusive.
  """
  num_rows, t = mask.shape
  padded = np.zeros((num_rows, t + 2), np.int8)
  padded[:, 1:-1] = mask
  step = np.diff(padded, axis=1)  # +1 at a run's start, -1 one past its end
  rows, starts = np.nonzero(step == 1)
  _, stops = np.nonzero(step == -1)
  return rows, starts, stops - 1


def interval_iou(start, end, starts, ends):
  """tIoU of segment intervals [start, end + 1) vs arrays (integer or fractional)."""
  inter = np.clip(np.minimum(end, ends) + 1 - np.maximum(start, starts), 0, None)
  union = (end - start + 1) + (ends - starts + 1) - inter
  return inter / union


def nms(starts, ends, scores, threshold: float) -> np.ndarray:
  """Greedy NMS of one class: indices kept, by descending score.

  A proposal is suppressed when its tIoU with a kept, higher-scoring one
  exceeds `threshold`.
  """
  order = np.argsort(-scores, kind="stable")
  starts, ends = starts[order], ends[order]
  iou = interval_iou(starts[:, None], ends[:, None], starts[None, :], ends[None, :])
  suppressed = np.zeros(len(order), bool)
  keep = []
  for i in range(len(order)):
    if suppressed[i]:
      continue
    keep.append(i)
    suppressed |= iou[i] > threshold
  return order[np.asarray(keep, dtype=np.int64)]


def fuse(outputs: Mapping[str, StreamOutput], theta: float):
  """Fused video probabilities [C], attention [T] and weighted T-CAM [T, C]."""
  weights = stream_weights(list(outputs), theta)
  probs = sum(w * outputs[s].class_probs for s, w in weights.items())
  attention = sum(w * outputs[s].attention for s, w in weights.items())
  wcas = sum(w * outputs[s].attention[:, None] * outputs[s].cas[:, 1:]
             for s, w in weights.items())
  return probs, attention, wcas


def tcam_signal(outputs: Mapping[str, StreamOutput], theta: float, classes) -> np.ndarray:
  """STPN's proposal signal: fused λ_t·sigmoid(T-CAM) of each class, [K, T]."""
  weights = stream_weights(list(outputs), theta)
  return sum(w * (outputs[s].attention[:, None]
                  * special.expit(outputs[s].cas[:, 1:][:, classes])).T
             for s, w in weights.items())


def classwise_nms(classes, starts, ends, scores, threshold: float) -> Detections:
  """The proposals [N] that survive NMS within their class, class by class in order."""
  keep = [idx[nms(starts[idx], ends[idx], scores[idx], threshold)]
          for idx in (np.flatnonzero(classes == c) for c in np.unique(classes))]
  keep = np.concatenate(keep) if keep else np.zeros(0, np.int64)
  return Detections(classes[keep], starts[keep], ends[keep], scores[keep])


def to_seconds(dets: Detections, seconds_per_segment: float,
               duration: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
  """start = t_s·F/fps, end = (t_e+1)·F/fps, clipped to the duration when known."""
  start = dets.starts * seconds_per_segment
  end = (dets.ends + 1) * seconds_per_segment
  if duration is not None:
    start, end = np.minimum(start, duration), np.minimum(end, duration)
  return start, end
