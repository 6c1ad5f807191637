"""Trains the model.

python -m wtal_tf.train --flagfile=flags/thumos14.cfg --data_dir=DIR --model_dir=DIR
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.training import trainer


def define_flags(fv=flags.FLAGS):
  cli.define_flags(fv=fv)


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  trainer.train(cfg, flags_text=cli.experiment_flags())


if __name__ == "__main__":
  define_flags()
  cli.run(main)
