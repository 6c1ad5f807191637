"""The per-prediction loop in the form of ActivityNet's own evaluation script.

Same definition and numbers as reference_eval.py, but with that script's data
structures: pandas DataFrames, `iterrows` over the predictions and a
`groupby(...).get_group` lookup of the video's instances for each one. This
is what users of the official evaluation code wait for; reference_eval.py
is the lean form of the same loop.
"""

import numpy as np
import pandas as pd

from reference_eval import ap_from_counts
from reference_eval import match
from reference_eval import segment_iou


def average_precision(ground_truth: pd.DataFrame, prediction: pd.DataFrame, tious):
  ap = np.zeros(len(tious))
  if prediction.empty:
    return ap
  npos = float(len(ground_truth))
  lock = -np.ones((len(tious), len(ground_truth)))
  order = prediction["score"].values.argsort()[::-1]
  prediction = prediction.loc[order].reset_index(drop=True)
  tp = np.zeros((len(tious), len(prediction)))
  fp = np.zeros((len(tious), len(prediction)))
  by_video = ground_truth.groupby("video")
  for idx, pred in prediction.iterrows():
    try:
      gt_video = by_video.get_group(pred["video"]).reset_index()
    except KeyError:
      fp[:, idx] = 1
      continue
    tiou = segment_iou(pred[["start", "end"]].values.astype(float),
                       gt_video[["start", "end"]].values)
    match(idx, tiou, lambda j: gt_video.loc[j]["index"], tious, lock, tp, fp)
  return ap_from_counts(tp, fp, npos)


def mean_ap(gt_database, subset, results, tious):
  """mAP per threshold over the classes with ground truth in `subset`."""
  gt_rows = [(video, a["label"], float(a["segment"][0]), float(a["segment"][1]))
             for video, entry in gt_database.items() if entry["subset"] == subset
             for a in entry["annotations"] if a["label"] != "Ambiguous"]
  ground_truth = pd.DataFrame(gt_rows, columns=["video", "label", "start", "end"])
  prediction = pd.DataFrame(
      [(video, d["label"], float(d["score"]), float(d["segment"][0]), float(d["segment"][1]))
       for video, dets in results.items() for d in dets],
      columns=["video", "label", "score", "start", "end"])
  classes = sorted(ground_truth["label"].unique())
  aps = np.zeros((len(tious), len(classes)))
  for k, c in enumerate(classes):
    gt_c = ground_truth[ground_truth["label"] == c].reset_index(drop=True)
    pred_c = prediction[prediction["label"] == c].reset_index(drop=True)
    aps[:, k] = average_precision(gt_c, pred_c, tious)
  return aps.mean(axis=1), aps, classes
