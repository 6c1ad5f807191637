"""Scores detections: mAP at each tIoU and the averages, as a table and JSON.

python -m wtal_tf.evaluate --gt=GT.json --detections=FILE --subset=test [--tiou=thumos14] \\
    [--output=SCORES.json]

Without --gt, the ground truth is the dataset's that the experiment flags name
(--data_dir, --layout, --gt_file; e.g. --flagfile=MODEL_DIR/flags.cfg), in either layout.

The scores go to --output, by default beside the detections (FILE's extension replaced
by .eval.json).
A default location that cannot be written, or that is one of the inputs, is a
warning (the table is still printed, nothing is written); such an --output is an
error before any work.
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.evaluation import metrics


def define_flags(fv=flags.FLAGS):
  cli.define_flags(fv=fv)
  flags.DEFINE_string("gt", None, "Ground-truth JSON (default: the dataset's, of --data_dir, "
                      "--layout and --gt_file).", flag_values=fv)
  flags.DEFINE_string("detections", None, "Detections JSON.", flag_values=fv)
  flags.DEFINE_string("subset", None, "Subset scored (default --test_subset).", flag_values=fv)
  cli.define_per_class_flag(fv)
  flags.DEFINE_string("output", "", "Scores JSON (default: beside the detections, their "
                      "extension replaced by .eval.json).", flag_values=fv)


def main(argv):
  del argv
  f = cli.FLAGS
  cli.warn(metrics.evaluate_command(cli.config_from_flags(), f.detections, f.gt, f.subset,
                                    f.output, f.per_class, tiou_chosen=f["tiou"].present))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
