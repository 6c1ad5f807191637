"""Draws timelines of test videos to PNG files (paper Fig. 4/5).

python -m wtal_tf.visualize --flagfile=... --data_dir=DIR --model_dir=DIR \\
    [--videos=a,b | --num_videos=N (default 4)] --output_dir=DIR [--compare_model_dir=DIR]
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.inference import timelines


def define_flags(fv=flags.FLAGS):
  cli.define_flags(fv=fv)
  flags.DEFINE_list("videos", [], "Test videos to draw.", flag_values=fv)
  flags.DEFINE_integer("num_videos", 4, "Draw the first N test videos.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_string("compare_model_dir", None, "A second model drawn below (e.g. STPN).",
                      flag_values=fv)
  flags.DEFINE_string("output_dir", None, "Where the PNG files go.", flag_values=fv)


def main(argv):
  del argv
  f = cli.FLAGS
  cfg = cli.config_from_flags()
  dirs = [cli.require(cfg.train.model_dir, "model_dir")] + (
      [f.compare_model_dir] if f.compare_model_dir else [])
  for path in timelines.draw(cfg, dirs, f.videos, f.num_videos,
                             cli.require(f.output_dir, "output_dir")):
    print(path)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
