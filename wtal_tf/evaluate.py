"""Scores detections: mAP at each tIoU and the averages, as a table and JSON.

python -m wtal_tf.evaluate --gt=GT.json --detections=FILE --subset=test [--tiou=thumos14] \\
    [--output=SCORES.json]

The scores go to --output, by default beside the detections (FILE's extension replaced
by .eval.json).
A default location that cannot be written, or that is one of the inputs, is a
warning (the table is still printed, nothing is written); such an --output is an
error before any work.
"""

import sys

from absl import flags

from wtal_tf import cli
from wtal_tf import io_utils
from wtal_tf.errors import UserError
from wtal_tf.evaluation import activitynet
from wtal_tf.evaluation import metrics


def define_flags(fv=flags.FLAGS):
  cli.define_flags(fv=fv)
  flags.DEFINE_string("gt", None, "Ground-truth JSON.", flag_values=fv)
  flags.DEFINE_string("detections", None, "Detections JSON.", flag_values=fv)
  flags.DEFINE_string("subset", None, "Subset scored (default --test_subset).", flag_values=fv)
  flags.DEFINE_boolean("per_class", False, "Also print per-class AP.", flag_values=fv)
  flags.DEFINE_string("output", "", "Scores JSON (default: beside the detections, their "
                      "extension replaced by .eval.json).", flag_values=fv)


def main(argv):
  del argv
  f = cli.FLAGS
  cfg = cli.config_from_flags()
  detections, gt = cli.require(f.detections, "detections"), cli.require(f.gt, "gt")
  output = f.output or activitynet.results_path(detections)
  unwritten = None  # why the default location cannot take the scores
  try:  # before any work; the default location may not be an input either
    io_utils.check_writable(output, "scores file", {gt: "ground truth of --gt",
                                                    detections: "detections of --detections"})
  except UserError as e:
    if f.output:
      raise
    unwritten = e
  result = metrics.evaluate_files(gt, detections, f.subset or cfg.data.test_subset,
                                  cfg.eval.thresholds)
  print(metrics.format_table(result, cfg.eval.averages, f.per_class))
  if unwritten is None:
    try:
      metrics.write_scores(result, cfg.eval.averages, output)
    except UserError as e:
      if f.output:
        raise
      unwritten = e
  if unwritten is not None:
    print(f"warning: {unwritten}; pass --output=FILE to keep them", file=sys.stderr)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
