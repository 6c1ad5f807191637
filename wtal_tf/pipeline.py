"""Train, localize and evaluate in one command (what ./run.sh runs).

python -m wtal_tf.pipeline --flagfile=flags/synthetic.cfg --data_dir=DIR --model_dir=DIR
"""

from wtal_tf import cli
from wtal_tf import evaluation
from wtal_tf import export
from wtal_tf import groundtruth
from wtal_tf import io_utils
from wtal_tf import training


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  cli.prepare_model_dir(cfg)
  training.train(cfg)
  detections, dataset = export.localize_to_file(cfg)
  preds = evaluation.parse_detections(groundtruth.load_json(detections), detections)
  result = evaluation.evaluate(dataset.test_gt, preds, cfg.eval.thresholds,
                               known_labels=set(dataset.classes))
  io_utils.write_json(evaluation.results_path(detections), result.to_dict(cfg.eval.averages),
                      indent=1)
  print(f"detections: {detections}")
  print(evaluation.format_table(result, cfg.eval.averages, cli.FLAGS.per_class))


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
