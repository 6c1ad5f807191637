"""Detections (ActivityNet JSON) and a timeline picture for one new video.

python -m wtal_tf.detect --model_dir=M --video=FILE [--output=F] [--timeline=PNG] \\
    [--rgb_checkpoint=P] [--flow_checkpoint=P]

The streams the model was trained on are extracted from the video as
`wtal_tf.extract` does (docs/raw_video.md).
"""

from wtal_tf import cli
from wtal_tf.features import detection


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  cli.require(cfg.train.model_dir, "model_dir")
  cli.require(cfg.detect.video, "video")
  for path in detection.detect_video(cfg):
    if path:
      print(path)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
