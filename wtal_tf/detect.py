"""Detections (ActivityNet JSON) and a timeline picture for one new video.

python -m wtal_tf.detect --model_dir=M --video=FILE [--output=F] [--timeline=PNG] \\
    [--rgb_checkpoint=P] [--flow_checkpoint=P]

The streams the model was trained on are extracted from the video as
`wtal_tf.extract` does (docs/raw_video.md).
"""

from absl import flags

from wtal_tf import cli
from wtal_tf import config
from wtal_tf.inference import new_video


def define_flags(fv=flags.FLAGS):
  cli.define_flags(config.EXPERIMENT_GROUPS + ("detect",), fv=fv)
  cli.define_flags(("extract",), fields=config.ENCODING_FIELDS, fv=fv)


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  cli.require(cfg.train.model_dir, "model_dir")
  cli.require(cfg.detect.video, "video")
  for path in new_video.detect_video(cfg):
    if path:
      print(path)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
