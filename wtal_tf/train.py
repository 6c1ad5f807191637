"""Trains the model: python -m wtal_tf.train --flagfile=flags/thumos14.cfg --data_dir=... --model_dir=..."""

import os

from wtal_tf import checkpointing
from wtal_tf import cli
from wtal_tf import training


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  checkpointing.check_writable(cli.require(cfg.train.model_dir, "model_dir"))
  cli.save_flags(os.path.join(cfg.train.model_dir, "flags.cfg"))
  training.train(cfg)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
