"""Generates the embedded THUMOS14-shaped synthetic dataset.

python -m wtal_tf.tools.make_synthetic --output_dir=data/synthetic [--feature_dim=128] [--seed=0]
python -m wtal_tf.tools.make_synthetic --microvideos_only --num_microvideos=915 \\
    --output_dir=data/synthetic/micro
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.data import synthetic

DEFAULTS = synthetic.SyntheticConfig()


def define_flags(fv=flags.FLAGS):
  cli.define_flags(("data", "train"), fields=("seed", "feature_fps", "segment_frames"), fv=fv)
  flags.DEFINE_string("output_dir", None, "The dataset folder written (must not exist).",
                      flag_values=fv)
  flags.DEFINE_integer("num_train_videos", DEFAULTS.num_train, "Training videos.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("num_test_videos", DEFAULTS.num_test, "Test videos.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("num_microvideos", DEFAULTS.num_micro, "Microvideos written under "
                       "OUTPUT_DIR/micro/ (with --microvideos_only, in OUTPUT_DIR).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_boolean("microvideos_only", False, "Write only --num_microvideos clips (same "
                       "seed's world).", flag_values=fv)
  flags.DEFINE_integer("feature_dim", DEFAULTS.feature_dim, "Feature dimension per stream.",
                       lower_bound=1, flag_values=fv)


def main(argv):
  del argv
  f = cli.FLAGS
  cfg = synthetic.SyntheticConfig(num_train=f.num_train_videos, num_test=f.num_test_videos,
                                  num_micro=f.num_microvideos, feature_dim=f.feature_dim,
                                  seed=f.seed, fps=f.feature_fps,
                                  segment_frames=f.segment_frames)
  generate = synthetic.generate_microvideos if f.microvideos_only else synthetic.generate
  print(generate(cfg, cli.require(f.output_dir, "output_dir")))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
