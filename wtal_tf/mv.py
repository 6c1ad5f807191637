"""Supplementary weakly-labelled videos ("microvideos", paper §4.1, Table 2 "Ours + MV").

python -m wtal_tf.mv --flagfile=flags/synthetic.cfg --data_dir=DIR --model_dir=OUT \\
    --extra_train=DIR/micro [--seeds=N]

Trains with and without the extra videos on the same seeds, prints both
tables and the per-class AP change of the classes with the fewest training
instances (also written to OUT/mv.md).
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.experiments import microvideos


def define_flags(fv=flags.FLAGS):
  cli.define_flags(fv=fv)
  cli.define_seeds_flag(fv)


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  cli.require(cfg.train.model_dir, "model_dir")
  print(microvideos.compare(cfg, cli.FLAGS.seeds, flagfile=cli.config_flagfile))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
