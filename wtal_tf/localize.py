"""Writes ActivityNet JSON detections of the test subset.

python -m wtal_tf.localize --flagfile=flags/thumos14.cfg --data_dir=DIR --model_dir=DIR \\
    [--output=FILE] [--save_outputs=DIR]

--save_outputs=DIR also writes each test video's raw outputs as DIR/<video>.npz
(per stream: attention [T], T-CAM [T, C+1], video-level class probabilities
[C]; see wtal_tf/inference/batch.py and the README).
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.inference import batch


def define_flags(fv=flags.FLAGS):
  cli.define_flags(fv=fv)
  cli.define_detections_output_flag(fv)
  flags.DEFINE_string("save_outputs", "", "Also write each test video's attention, T-CAM and "
                      "class probabilities to DIR/<video>.npz.", flag_values=fv)


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  cli.require(cfg.train.model_dir, "model_dir")
  print(batch.localize_to_file(cfg, cli.FLAGS.output, cli.FLAGS.save_outputs)[0])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
