"""Scores detections: mAP at each tIoU and the averages, as a table and JSON.

python -m wtal_tf.evaluate --gt=GT.json --detections=FILE --subset=test [--tiou=thumos14]
"""

from wtal_tf import cli
from wtal_tf import evaluation
from wtal_tf import io_utils


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  detections = cli.require(cli.FLAGS.detections, "detections")
  result = evaluation.evaluate_files(cli.require(cli.FLAGS.gt, "gt"), detections,
                                     cli.FLAGS.subset or cfg.data.test_subset,
                                     cfg.eval.thresholds)
  print(evaluation.format_table(result, cfg.eval.averages, cli.FLAGS.per_class))
  io_utils.write_json(evaluation.results_path(detections), result.to_dict(cfg.eval.averages),
                      indent=1)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
