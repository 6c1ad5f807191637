"""Non-maximum suppression of temporal proposals, per class.

Numpy on the host.
"""

import numpy as np

from wtal_tf.localization.detections import Detections


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


def classwise_nms(classes, starts, ends, scores, threshold: float) -> Detections:
  """The proposals [N] that survive NMS within their class, class by class in order."""
  keep = [idx[nms(starts[idx], ends[idx], scores[idx], threshold)]
          for idx in (np.flatnonzero(classes == c) for c in np.unique(classes))]
  keep = np.concatenate(keep) if keep else np.zeros(0, np.int64)
  return Detections(classes[keep], starts[keep], ends[keep], scores[keep])
