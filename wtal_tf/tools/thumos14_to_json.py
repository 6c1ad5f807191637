"""Converts the official THUMOS14 per-class annotation txt files to ActivityNet JSON.

python -m wtal_tf.tools.thumos14_to_json --val_annotations=DIR --test_annotations=DIR \\
    [--video_info=TH14_video_info.json] [--wtal_standard] --output=gt.json

Each `<Class>_<split>.txt` holds `video start end` lines (seconds). 'Ambiguous'
rows are not ground truth and are dropped. --wtal_standard also drops
video_test_0000270 and video_test_0001496 (the 210-video test convention of
BaS-Net/UM/CoLA).
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.data import thumos14


def define_flags(fv=flags.FLAGS):
  flags.DEFINE_string("val_annotations", None, "Dir of <Class>_val.txt files.", flag_values=fv)
  flags.DEFINE_string("test_annotations", None, "Dir of <Class>_test.txt files.",
                      flag_values=fv)
  flags.DEFINE_string("video_info", None, "Optional JSON {video: {duration}}.", flag_values=fv)
  flags.DEFINE_boolean("wtal_standard", False, "Drop test videos 270 and 1496 (210-video "
                       "convention).", flag_values=fv)
  flags.DEFINE_string("output", None, "The ActivityNet JSON written.", flag_values=fv)


def main(argv):
  del argv
  f = cli.FLAGS
  splits = {"validation": cli.require(f.val_annotations, "val_annotations"),
            "test": cli.require(f.test_annotations, "test_annotations")}
  summary, warning = thumos14.convert(splits, cli.require(f.output, "output"), f.video_info,
                                      f.wtal_standard)
  print(summary)
  cli.warn(warning)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
