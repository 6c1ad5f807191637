"""Trains the model.

python -m wtal_tf.train --flagfile=flags/thumos14.cfg --data_dir=DIR --model_dir=DIR
"""

from wtal_tf import cli
from wtal_tf import training


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  cli.prepare_model_dir(cfg)
  training.train(cfg)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
