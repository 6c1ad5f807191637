"""Train, localize and evaluate in one command (what ./run.sh runs).

python -m wtal_tf.train_eval --flagfile=flags/synthetic.cfg --data_dir=DIR --model_dir=DIR

At the end of training the test set is localized and scored with the final
model (besides any --eval_every evaluations during training); the detections go
to --output (default MODEL_DIR/detections_<test_subset>.json), their scores
beside them.
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.training import train_eval


def define_flags(fv=flags.FLAGS):
  cli.define_flags(fv=fv)
  cli.define_detections_output_flag(fv)
  cli.define_per_class_flag(fv)


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  print(train_eval.train_and_evaluate(cfg, cli.FLAGS.output, cli.FLAGS.per_class,
                                      cli.experiment_flags()))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
