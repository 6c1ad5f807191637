"""Writes ActivityNet JSON detections of the test subset.

python -m wtal_tf.localize --flagfile=flags/thumos14.cfg --data_dir=DIR --model_dir=DIR \
    [--output=FILE]
"""

from wtal_tf import cli
from wtal_tf import inference


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  cli.require(cfg.train.model_dir, "model_dir")
  print(inference.localize_to_file(cfg)[0])


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
