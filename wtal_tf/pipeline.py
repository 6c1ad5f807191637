"""Train, localize and evaluate in one command (what ./run.sh runs).

python -m wtal_tf.pipeline --flagfile=flags/synthetic.cfg --data_dir=DIR --model_dir=DIR
"""

from wtal_tf import cli
from wtal_tf import evaluation
from wtal_tf import inference
from wtal_tf import io_utils
from wtal_tf import training


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  cli.prepare_model_dir(cfg)
  training.train(cfg)
  detections, results, dataset = inference.localize_to_file(cfg)
  result = evaluation.score_results(dataset.test_gt, results, cfg.eval.thresholds,
                                    known_labels=set(dataset.classes), source=detections)
  io_utils.write_json(evaluation.results_path(detections), result.to_dict(cfg.eval.averages),
                      indent=1)
  print(f"detections: {detections}")
  print(evaluation.format_table(result, cfg.eval.averages, cli.FLAGS.per_class))


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
