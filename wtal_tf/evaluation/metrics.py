"""Detection mAP exactly as the ActivityNet detection benchmark defines it (SPEC §5).

Per class: predictions sorted by score (numpy argsort, reversed); each is
matched, in descending tIoU order (numpy argsort, reversed), to the first
not-yet-matched ground truth of its video and class with tIoU >= threshold,
else it is a false positive. AP is the all-point interpolated area of the
precision envelope (VOC 2011); mAP the mean over classes with ground truth.

The matching is vectorised: predictions of different (class, video) groups
never interact, so all groups advance together, one prediction each.
"""

import dataclasses
import os
from typing import Callable, Mapping, Optional, Sequence

from absl import logging
import numpy as np
import pandas as pd

from wtal_tf import contract
from wtal_tf.config import Config, parse_tious
from wtal_tf import io_utils
from wtal_tf import locks
from wtal_tf.data import datasets
from wtal_tf.data import groundtruth
from wtal_tf.errors import UserError
from wtal_tf.evaluation.activitynet import Predictions, parse_detections, results_path

TIOU_FLAG = "--tiou="  # its line in a flags.cfg
SCORES_KEYS = ("tious", "mAP", "per_class_AP")  # what tells a scores file (EvalResult.to_dict)
DETECTIONS_KEY = "detections"  # in a scores file: the absolute path of the detections scored
PERCENT = 100.0  # mAP and AP are printed, plotted and logged to TensorBoard in percent
TIOU_TOLERANCE = 1e-9  # a threshold this near an average's bound is within it (0.1 + 0.2)
MIN_COLUMN = 8  # characters of a column of the printed mAP table, at least
CLASS_COLUMN = 20  # characters of the class names of the per-class table (longer: cut)


@dataclasses.dataclass(frozen=True)
class EvalResult:
  tious: tuple[float, ...]
  classes: tuple[str, ...]  # classes with ground truth in the subset
  ap: np.ndarray  # [num_tious, num_classes]
  num_predictions: int

  @property
  def mean_ap(self) -> np.ndarray:
    return self.ap.mean(axis=1) if self.ap.size else np.zeros(len(self.tious))

  def averages(self, spans: Sequence[tuple[str, float, float]]) -> dict[str, float]:
    """Mean of mAP over the thresholds within each (name, lo, hi) span present."""
    t = np.asarray(self.tious)
    out = {}
    for name, lo, hi in spans:
      sel = (t >= lo - TIOU_TOLERANCE) & (t <= hi + TIOU_TOLERANCE)
      if sel.any():
        out[name] = float(self.mean_ap[sel].mean())
    return out

  def to_dict(self, spans=()) -> dict:
    return {"tious": list(self.tious),
            "mAP": {f"{t:g}": float(m) for t, m in zip(self.tious, self.mean_ap)},
            "averages": self.averages(spans),
            "per_class_AP": {c: [float(a) for a in self.ap[:, k]]
                             for k, c in enumerate(self.classes)},
            "num_predictions": self.num_predictions}


def segment_iou(start, end, starts, ends):
  """tIoU of [start, end] against arrays, as ActivityNet's segment_iou."""
  inter = np.clip(np.minimum(end, ends) - np.maximum(start, starts), 0, None)
  union = (ends - starts) + (end - start) - inter
  return inter / union


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
  """VOC 2011 all-point interpolated AP (ActivityNet's interpolated_prec_rec)."""
  mprec = np.hstack([[0.0], precision, [0.0]])
  mrec = np.hstack([[0.0], recall, [1.0]])
  mprec = np.maximum.accumulate(mprec[::-1])[::-1]
  idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
  return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _class_ap(tp: np.ndarray, num_gt: int) -> np.ndarray:
  """tp: [J, N] bool in score order -> AP per threshold [J]."""
  tp_cum = np.cumsum(tp, axis=1).astype(np.float64)
  fp_cum = np.cumsum(~tp, axis=1).astype(np.float64)
  recall = tp_cum / num_gt
  precision = tp_cum / (tp_cum + fp_cum)
  return np.array([interpolated_ap(precision[j], recall[j]) for j in range(tp.shape[0])])


def evaluate(gt: Mapping[str, groundtruth.GTVideo], preds: Predictions,
             tious: Sequence[float], known_labels: Optional[set] = None) -> EvalResult:
  """mAP of `preds` against the ground truth of one subset (`gt`).

  A prediction whose label is not in `known_labels` (default: the labels of
  `gt`) is an error naming the label. Predictions of known classes without
  ground truth in the subset do not enter the mean.
  """
  thr = np.asarray(tious, np.float64)
  num_thr = len(thr)
  classes = tuple(sorted({i.label for v in gt.values() for i in v.instances}))
  known = set(classes) if known_labels is None else set(known_labels) | set(classes)
  pred_class, pred_labels = pd.factorize(preds.labels)
  unknown = sorted(set(map(str, pred_labels)) - known)
  if unknown:
    raise UserError(f"detections have labels unknown to the ground truth: {unknown}")
  class_index = {c: k for k, c in enumerate(classes)}

  # Integer ids: videos of the ground truth first, then any others; a (class,
  # video) group is class * num_videos + video.
  video_index = {name: k for k, name in enumerate(gt)}
  pred_video, pred_videos = pd.factorize(preds.videos)
  for name in pred_videos:
    video_index.setdefault(str(name), len(video_index))
  num_videos = len(video_index)
  pred_video = np.array([video_index[str(n)] for n in pred_videos], np.int64)[pred_video]
  pred_class = np.array([class_index.get(str(l), -1) for l in pred_labels],
                        np.int64)[pred_class]
  pred_key = np.where(pred_class >= 0, pred_class * num_videos + pred_video, -1)

  # Ground truth grouped by (class, video), in file order within each group.
  rows = [(class_index[i.label], video_index[v.name], i.start, i.end)
          for v in gt.values() for i in v.instances]
  gt_arr = np.array(rows, np.float64).reshape(-1, 4)
  gt_key = (gt_arr[:, 0] * num_videos + gt_arr[:, 1]).astype(np.int64)
  by_group = np.argsort(gt_key, kind="stable")
  gt_key, gt_segs = gt_key[by_group], gt_arr[by_group, 2:]
  group_keys, group_start, group_size = np.unique(gt_key, return_index=True, return_counts=True)
  num_gt = np.bincount(gt_arr[:, 0].astype(np.int64), minlength=len(classes))
  max_gt = int(group_size.max()) if len(group_size) else 1

  # Each class's predictions sorted by score as ActivityNet does; processing
  # them class by class in that order fixes the rank within each group.
  per_class_order = [np.flatnonzero(pred_class == c) for c in range(len(classes))]
  per_class_order = [idx[np.argsort(preds.scores[idx])[::-1]] for idx in per_class_order]
  tp = np.zeros((num_thr, len(preds.scores)), bool)  # indexed by prediction
  sequence = np.concatenate(per_class_order) if per_class_order else np.zeros(0, np.int64)
  if len(group_keys):
    group = np.minimum(np.searchsorted(group_keys, pred_key[sequence]), len(group_keys) - 1)
    has_gt = group_keys[group] == pred_key[sequence]
  else:
    group, has_gt = np.zeros(len(sequence), np.int64), np.zeros(len(sequence), bool)
  matched, groups = sequence[has_gt], group[has_gt]  # the rest: FP (no gt of its class there)
  by = np.argsort(groups, kind="stable")
  first_of_group = np.searchsorted(groups[by], groups[by], side="left")
  ranks = np.empty(len(groups), np.int64)
  ranks[by] = np.arange(len(groups)) - first_of_group

  # tIoU of each matched prediction with its group's instances, in descending
  # order (numpy argsort reversed, on rows of exactly the group's size).
  sorted_iou = np.full((len(matched), max_gt), -np.inf)
  sorted_gt = np.zeros((len(matched), max_gt), np.int64)
  sizes = group_size[groups] if len(groups) else np.zeros(0, np.int64)
  for n in np.unique(sizes):
    sel = np.flatnonzero(sizes == n)
    segs = gt_segs[group_start[groups[sel]][:, None] + np.arange(n)[None, :]]  # [m, n, 2]
    p = matched[sel]
    iou = segment_iou(preds.starts[p, None], preds.ends[p, None], segs[..., 0], segs[..., 1])
    order = np.argsort(iou, axis=1)[:, ::-1]
    sorted_iou[sel, :n] = np.take_along_axis(iou, order, axis=1)
    sorted_gt[sel, :n] = order

  if len(matched):
    locked = np.zeros((len(group_keys), num_thr, max_gt), bool)
    thr_index = np.arange(num_thr)[None, :, None]
    for r in range(ranks.max() + 1):
      sel = np.flatnonzero(ranks == r)
      p, g, order = matched[sel], groups[sel], sorted_gt[sel]  # order: [n, M]
      free = ~locked[g[:, None, None], thr_index, order[:, None, :]]  # [n, J, M]
      cand = free & (sorted_iou[sel][:, None, :] >= thr[None, :, None])
      hit = cand.any(axis=2)  # [n, J]
      first = cand.argmax(axis=2)
      n_idx, j_idx = np.nonzero(hit)
      locked[g[n_idx], j_idx, order[n_idx, first[n_idx, j_idx]]] = True
      tp[:, p] = hit.T

  ap = np.zeros((num_thr, len(classes)))
  for c, idx in enumerate(per_class_order):
    if len(idx):
      ap[:, c] = _class_ap(tp[:, idx], num_gt[c])
  return EvalResult(tuple(float(t) for t in thr), classes, ap, len(preds.scores))


def format_table(result: EvalResult, spans=(), per_class: bool = False) -> str:
  """A plain-text table of mAP (%) at each tIoU and the averages."""
  head = [f"{t:g}" for t in result.tious] + [name for name, _, _ in spans]
  vals = (list(result.mean_ap * PERCENT)
          + [v * PERCENT for v in result.averages(spans).values()])
  width = max(MIN_COLUMN, *(len(h) + 1 for h in head))
  lines = ["tIoU     " + "".join(h.rjust(width) for h in head),
           "mAP (%)  " + "".join(f"{v:{width}.2f}" for v in vals)]
  if per_class:
    lines += ["", f"{'AP (%) at tIoU':<{CLASS_COLUMN}} "
              + " ".join(f"{t:6g}" for t in result.tious)]
    for k, c in enumerate(result.classes):
      lines.append(f"{c[:CLASS_COLUMN]:<{CLASS_COLUMN}} "
                   + " ".join(f"{a * PERCENT:6.2f}" for a in result.ap[:, k]))
  return "\n".join(lines)


def score_results(gt: Mapping[str, groundtruth.GTVideo], results: dict, tious,
                  known_labels=None, source: str = "detections") -> EvalResult:
  """mAP of an in-memory ActivityNet `results` dict ({video: [detection]})."""
  return evaluate(gt, parse_detections({"results": results}, source), tious, known_labels)


def recorded_tiou(document) -> str:
  """The --tiou that the model which made a detections `document` was evaluated at: its
  MODEL_DIR/flags.cfg's ("" if the document or the model dir does not say)."""
  meta = document.get("external_data") if isinstance(document, dict) else None
  model_dir = meta.get("model_dir") if isinstance(meta, dict) else None
  if not isinstance(model_dir, str):
    return ""
  try:
    with open(os.path.join(model_dir, contract.FLAGS_FILE), encoding="utf-8") as f:
      lines = f.read().splitlines()
  except (OSError, ValueError):
    return ""
  return next((line[len(TIOU_FLAG):] for line in lines if line.startswith(TIOU_FLAG)), "")


def _thresholds(tiou: str) -> Optional[tuple[float, ...]]:
  """The thresholds of a --tiou value (None: not one)."""
  try:
    return parse_tious(tiou)
  except ValueError:
    return None


def evaluate_files(gt_path: str, detections_path: str, subset: str, tious,
                   known_labels=None, gt_all: Optional[dict] = None,
                   tiou: str = "") -> EvalResult:
  """Scores an ActivityNet detections file against one subset of a ground-truth file
  (or of `gt_all`, {video: GTVideo}, read from `gt_path` already). tiou: the --tiou
  that gave `tious` when no flag chose it (a default): a warning if the detections'
  model was evaluated at another."""
  gt_all = groundtruth.load_activitynet(gt_path) if gt_all is None else gt_all
  gt = groundtruth.select_subset(gt_all, subset, gt_path, "--subset")
  groundtruth.check_annotated(gt, subset, gt_path)  # (else every label is "unknown")
  known = {l for v in gt_all.values() for l in v.labels} | set(known_labels or ())
  try:
    document = groundtruth.load_json(detections_path)
    preds = parse_detections(document, detections_path)
    theirs = recorded_tiou(document) if tiou else ""
    if theirs and _thresholds(theirs) not in (None, _thresholds(tiou)):  # e.g. ActivityNet's
      # detections at THUMOS14's thresholds
      logging.warning("%s: its model was evaluated at --tiou=%s (its %s), these scores are "
                      "at --tiou=%s: pass --tiou=%s to score it so", detections_path, theirs,
                      contract.FLAGS_FILE, tiou, theirs)
    detected = set(map(str, preds.videos))
    outside = sorted(detected - set(gt))
    if outside:  # e.g. another dataset's ground truth: every score would be ~0
      logging.warning("%s: %d of the %d videos with detections are not in subset %r of %s "
                      "(e.g. %s): their detections count as false positives",
                      detections_path, len(outside), len(detected), subset, gt_path, outside[0])
    absent = sorted(set(gt) - set(map(str, document["results"])))  # (an empty list counts)
    if absent:  # e.g. detections of another list of test videos: every score is lower
      logging.warning("%s: %d of the %d videos of subset %r of %s have no entry (e.g. %s): "
                      "they count as videos without detections", detections_path,
                      len(absent), len(gt), subset, gt_path, absent[0])
    return evaluate(gt, preds, tious, known_labels=known)
  except UserError as e:
    if str(e).startswith(detections_path):
      raise
    raise UserError(f"{detections_path}: {e}") from None


def write_scores(result: EvalResult, spans, path: str, detections: str) -> None:
  """The numbers of an evaluation of the file `detections` as JSON at `path` (with
  DETECTIONS_KEY); a UserError naming it if it cannot be written."""
  try:
    io_utils.write_json(path, {**result.to_dict(spans),
                               DETECTIONS_KEY: os.path.abspath(detections)}, indent=1)
  except OSError as e:
    raise UserError(f"{path}: cannot write the scores ({e.strerror or e})") from None


def evaluate_to_file(gt_path: str, detections_path: str, subset: str, tious, spans,
                     output: str = "", per_class: bool = False,
                     show: Callable[[str], None] = print,
                     gt_all: Optional[dict] = None, known_labels=(),
                     tiou: str = "") -> Optional[str]:
  """Scores a detections file (evaluate_files), shows the table, and writes the scores
  to `output`, by default beside the detections (results_path).

  An `output` that cannot be written, or is one of the inputs, is a UserError before
  any work (or, found only when writing, after the table is shown); so is a detections
  file changed while it was scored (e.g. by localize), after the table. The default
  location is only a convenience: then the returned warning says why nothing was
  written (None: written).
  """
  path = output or results_path(detections_path)

  def unless_default(step) -> Optional[str]:
    try:
      step()
      return None
    except UserError as e:
      if output:
        raise
      return f"{e}; pass --output=FILE to keep them"

  unwritten = unless_default(lambda: io_utils.check_writable(
      path, "scores file", {gt_path: "ground truth of --gt",
                            detections_path: "detections of --detections"}))
  read = io_utils.fingerprint(detections_path)  # (before reading it)
  result = evaluate_files(gt_path, detections_path, subset, tious, known_labels, gt_all, tiou)
  show(format_table(result, spans, per_class))
  if unwritten:
    return unwritten
  with locks.replacing_in(os.path.dirname(os.path.abspath(detections_path))):
    if io_utils.fingerprint(detections_path) != read:  # (e.g. localize replaced them:
      # scores naming the file would describe detections it may no longer hold)
      raise UserError(f"{detections_path}: changed or removed while it was scored: the "
                      "scores above may not be of the file there now, and are not written; "
                      "evaluate it again")
    return unless_default(lambda: write_scores(result, spans, path, detections_path))


def evaluate_command(cfg: Config, detections: str, gt: str = "", subset: str = "",
                     output: str = "", per_class: bool = False,
                     tiou_chosen: bool = False) -> Optional[str]:
  """wtal_tf.evaluate: evaluate_to_file with the experiment flags `cfg`.

  Without `gt`, the ground truth (and class list) is the dataset's that cfg.data names;
  `subset` defaults to cfg.data.test_subset. tiou_chosen: a flag chose cfg.eval.tiou
  (else the detections' model's own thresholds, if others, are named in a warning).
  """
  gt_all, classes = None, ()
  if not gt and (cfg.data.data_dir or cfg.data.gt_file):
    gt_all, gt, classes = datasets.ground_truth(cfg.data)
  if not gt:
    raise UserError("--gt (or the dataset's --data_dir) is required")
  if not detections:
    raise UserError("--detections is required")
  return evaluate_to_file(gt, detections, subset or cfg.data.test_subset, cfg.eval.thresholds,
                          cfg.eval.averages, output, per_class, gt_all=gt_all,
                          known_labels=classes, tiou="" if tiou_chosen else cfg.eval.tiou)
