"""Generates the embedded THUMOS14-shaped synthetic dataset.

python -m wtal_tf.tools.make_synthetic --output_dir=data/synthetic [--feature_dim=128] [--seed=0]
python -m wtal_tf.tools.make_synthetic --microvideos_only --num_microvideos=915 \
    --output_dir=data/synthetic/micro
"""

import os

from wtal_tf import cli
from wtal_tf import synthetic
from wtal_tf.errors import UserError


def main(argv):
  del argv
  f = cli.FLAGS
  out = cli.require(f.output_dir, "output_dir")
  if os.path.exists(out):
    raise UserError(f"{out}: already exists; remove it to generate again")
  cfg = synthetic.SyntheticConfig(num_train=f.num_train_videos, num_test=f.num_test_videos,
                                  num_micro=f.num_microvideos, feature_dim=f.feature_dim,
                                  seed=f.seed, fps=f.feature_fps,
                                  segment_frames=f.segment_frames)
  if f.microvideos_only:
    print(synthetic.generate_microvideos(cfg, out))
  else:
    print(synthetic.generate(cfg, out))


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
