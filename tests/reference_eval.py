"""A straightforward per-prediction loop of the ActivityNet detection mAP.

The baseline of bench/bench_localize_eval.py and the oracle of tests/test_evaluation.py:
it follows ActivityNet's compute_average_precision_detection line by line
(without pandas), one prediction and one threshold at a time.
"""

import numpy as np


def segment_iou(target, candidates):
  tt1 = np.maximum(target[0], candidates[:, 0])
  tt2 = np.minimum(target[1], candidates[:, 1])
  inter = (tt2 - tt1).clip(0)
  union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
  return inter.astype(float) / union


def interpolated_prec_rec(prec, rec):
  mprec = np.hstack([[0], prec, [0]])
  mrec = np.hstack([[0], rec, [1]])
  for i in range(len(mprec) - 1)[::-1]:
    mprec[i] = max(mprec[i], mprec[i + 1])
  idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
  return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def match(idx, tiou, gt_id, tious, lock, tp, fp):
  """Prediction idx against its video's instances (tIoUs `tiou`), every threshold.

  gt_id(j) is the class-wide index of the video's j-th instance; lock, tp and
  fp are updated in place, as in ActivityNet's loop.
  """
  order = tiou.argsort()[::-1]
  for t, thr in enumerate(tious):
    for j in order:
      if tiou[j] < thr:
        fp[t, idx] = 1
        break
      if lock[t, gt_id(j)] >= 0:
        continue
      tp[t, idx] = 1
      lock[t, gt_id(j)] = idx
      break
    if fp[t, idx] == 0 and tp[t, idx] == 0:
      fp[t, idx] = 1


def ap_from_counts(tp, fp, npos):
  """tp, fp: [thresholds, predictions] in score order -> AP per threshold."""
  tp_c = np.cumsum(tp, axis=1).astype(float)
  fp_c = np.cumsum(fp, axis=1).astype(float)
  rec = tp_c / npos
  prec = tp_c / (tp_c + fp_c)
  return np.array([interpolated_prec_rec(prec[t], rec[t]) for t in range(len(tp))])


def average_precision(gt_rows, pred_rows, tious):
  """gt_rows: [(video, start, end)]; pred_rows: [(video, score, start, end)] in file order."""
  ap = np.zeros(len(tious))
  if not pred_rows:
    return ap
  lock = -np.ones((len(tious), len(gt_rows)))
  scores = np.array([p[1] for p in pred_rows])
  preds = [pred_rows[i] for i in scores.argsort()[::-1]]
  tp = np.zeros((len(tious), len(preds)))
  fp = np.zeros((len(tious), len(preds)))
  by_video = {}
  for k, (v, s, e) in enumerate(gt_rows):
    by_video.setdefault(v, []).append((k, s, e))
  for idx, (video, _, start, end) in enumerate(preds):
    if video not in by_video:
      fp[:, idx] = 1
      continue
    rows = by_video[video]
    segs = np.array([[s, e] for _, s, e in rows])
    tiou = segment_iou(np.array([start, end]), segs)
    match(idx, tiou, lambda j: rows[j][0], tious, lock, tp, fp)
  return ap_from_counts(tp, fp, float(len(gt_rows)))


def mean_ap(gt_database, subset, results, tious):
  """mAP per threshold over the classes with ground truth in `subset`."""
  gt_by_class = {}
  for video, entry in gt_database.items():
    if entry["subset"] != subset:
      continue
    for a in entry["annotations"]:
      if a["label"] == "Ambiguous":
        continue
      gt_by_class.setdefault(a["label"], []).append(
          (video, float(a["segment"][0]), float(a["segment"][1])))
  pred_by_class = {}
  for video, dets in results.items():
    for d in dets:
      pred_by_class.setdefault(d["label"], []).append(
          (video, float(d["score"]), float(d["segment"][0]), float(d["segment"][1])))
  classes = sorted(gt_by_class)
  aps = np.zeros((len(tious), len(classes)))  # as ActivityNet: [tiou, class], filled by column
  for k, c in enumerate(classes):
    aps[:, k] = average_precision(gt_by_class[c], pred_by_class.get(c, []), tious)
  return aps.mean(axis=1), aps, classes
