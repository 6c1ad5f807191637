"""Converts the official THUMOS14 per-class annotation txt files to ActivityNet JSON.

python -m wtal_tf.tools.thumos14_to_json --val_annotations=DIR --test_annotations=DIR \\
    [--video_info=TH14_video_info.json] [--wtal_standard] --output=gt.json

Each `<Class>_<split>.txt` holds `video start end` lines (seconds). 'Ambiguous'
rows are not ground truth and are dropped. --wtal_standard also drops
video_test_0000270 and video_test_0001496 (the 210-video test convention of
BaS-Net/UM/CoLA).
"""

import sys

from absl import flags

from wtal_tf import cli
from wtal_tf import io_utils
from wtal_tf.data import groundtruth
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
  out = cli.require(f.output, "output")
  io_utils.check_writable(out, "ground-truth file")  # before the work
  videos = thumos14.read_official(splits, f.video_info, f.wtal_standard)
  io_utils.write_json(out, groundtruth.to_activitynet(videos.values(), thumos14.VERSION), indent=1)
  print(f"{out}: {len(videos)} videos, {sum(len(v.instances) for v in videos.values())} instances")
  undated = sorted(k for k, v in videos.items() if v.duration is None)
  if f.video_info and undated:  # (a file for other videos matches none and is refused)
    print(f"warning: {f.video_info}: no duration for {len(undated)} of {len(videos)} videos "
          f"(e.g. {undated[0]}): their detections are not clipped to the video's end",
          file=sys.stderr)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
