"""How well a trained model's attention separates actions from background.

python -m wtal_tf.tools.attention_stats --flagfile=flags/synthetic.cfg \\
    --data_dir=data/synthetic --model_dir=runs/synthetic

Prints, for the training and the test videos, the frame-level ROC AUC of the
fused attention λ̄ against the ground truth, its mean on action and background
segments, the fraction of background segments above the largest proposal
threshold, the guide-loss targets (Eq 6, 7) on both, and on background the
frame-level probability of the background class and of the likeliest class
absent from the video. Then the test AUC of a linear action/background
classifier fitted with full supervision (the training videos' ground-truth
segments) to the same features: how separable the segments are in themselves.
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.experiments import attention_stats


def define_flags(fv=flags.FLAGS):
  cli.define_flags(fv=fv)


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  cli.require(cfg.train.model_dir, "model_dir")
  print(attention_stats.report(cfg))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
