"""How well a trained model's attention separates actions from background.

python -m wtal_tf.tools.attention_stats --flagfile=flags/synthetic.cfg \
    --data_dir=data/synthetic --model_dir=runs/synthetic

Prints, for the training and the test videos, the frame-level ROC AUC of the
fused attention λ̄ against the ground truth, its mean on action and background
segments, the fraction of background segments above the largest proposal
threshold, and the guide-loss targets (Eq 6, 7) on both.
"""

from wtal_tf import checkpointing
from wtal_tf import cli
from wtal_tf import data
from wtal_tf import diagnostics
from wtal_tf.inference import Predictor


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  model, spec = checkpointing.restore(cli.require(cfg.train.model_dir, "model_dir"))
  dataset = data.load_dataset(cfg.data)
  gt, _, _ = data.ground_truth(cfg.data)
  predict = Predictor(model, spec["feature_dims"])
  top = max(cfg.localize.attention_thresholds)
  splits = {"train": [v for v in dataset.train if v.name in gt],  # not --extra_train clips
            "test": dataset.test}
  rows = {name: diagnostics.attention_stats(
              predict, videos, gt, model.streams, len(dataset.classes), cfg.localize.theta,
              model.loss_config.guide_sigma, top, cfg.data.seconds_per_segment)
          for name, videos in splits.items()}
  print(diagnostics.format_stats(rows, top))


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
