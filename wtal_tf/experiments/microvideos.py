"""Supplementary weakly-labelled videos ("microvideos", paper §4.1, Table 2 "Ours + MV").

Trains with and without the extra videos on the same seeds; reports both
tables and the per-class AP change of the classes with the fewest training
instances.
"""

import collections
from typing import Callable

import numpy as np

from wtal_tf.config import Config
from wtal_tf.data import datasets as data
from wtal_tf.data import groundtruth
from wtal_tf.errors import UserError
from wtal_tf.evaluation import metrics
from wtal_tf.experiments import ablation

RAREST = 5  # classes reported in the per-class comparison
MV_PREFIX = "mv"  # its files under MODEL_DIR: mv.md, mv.csv, mv_curve.*
REPORT_TIOU = 0.5  # the per-class comparison's tIoU (the first threshold when not evaluated)
WITHOUT, WITH = "Ours", "Ours + MV"


def rarest_classes(cfg: Config, count: int = RAREST) -> list[str]:
  """The classes with the fewest instances in the training subset."""
  gt, source, _ = data.ground_truth(cfg.data)
  videos = groundtruth.select_subset(gt, cfg.data.train_subset, source, "--train_subset")
  counts = collections.Counter(i.label for v in videos.values() for i in v.instances)
  return sorted(counts, key=lambda c: (counts[c], c))[:count]


def per_class_change(results, classes: list[str], tiou: float) -> list[tuple[str, float, float]]:
  """(class, AP without, AP with) at `tiou`, in %, averaged over seeds."""
  rows = []
  for c in classes:
    aps = []
    for r in results:
      per_seed = []
      for e in r.evals:
        j = e.tious.index(tiou)
        per_seed.append(e.ap[j, e.classes.index(c)] * metrics.PERCENT if c in e.classes else np.nan)
      aps.append(float(np.mean(per_seed)))
    rows.append((c, aps[0], aps[1]))
  return rows


def compare(cfg: Config, seeds: int, *, flagfile: Callable[[Config], str]) -> str:
  """Both rows for `seeds` seeds; writes and returns MODEL_DIR/mv.md's Markdown: the
  table, then AP at REPORT_TIOU per class of the fewest training instances.
  flagfile: as ablation.run's."""
  data.check_data_dir(cfg.data)  # (a dataset not there is the first thing to say)
  if not cfg.data.extra_train:
    raise UserError("--extra_train is required: the dirs of the supplementary videos")
  rare = rarest_classes(cfg)  # (reads the ground truth: fails, if it does, before training)
  tiou = REPORT_TIOU if REPORT_TIOU in cfg.eval.thresholds else cfg.eval.thresholds[0]

  def per_class(results) -> str:
    lines = [f"| class (fewest training instances) | AP@{tiou:g} {WITHOUT} | {WITH} | change |",
             "|---|---:|---:|---:|"]
    for c, a, b in per_class_change(results, rare, tiou):
      if np.isnan(a) or np.isnan(b):  # no test instances: no AP
        lines.append(f"| {c} | – | – | no test instances |")
      else:
        lines.append(f"| {c} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    return "\n".join(lines) + "\n"

  rows = (ablation.Row(WITHOUT, data={"extra_train": ()}),
          ablation.Row(WITH, data={"extra_train": cfg.data.extra_train}))
  results = ablation.run(cfg, seeds, rows, prefix=MV_PREFIX, flagfile=flagfile,
                         notes=per_class)
  return ablation.markdown(results, cfg, per_class)
