"""How well a trained model's attention separates actions from background.

python -m wtal_tf.tools.attention_stats --flagfile=flags/synthetic.cfg \
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

import numpy as np

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
  predict = Predictor(model, spec["feature_dims"], cfg.localize)
  top = max(cfg.localize.attention_thresholds)
  splits = {"train": [v for v in dataset.train if v.name in gt],  # not --extra_train clips
            "test": dataset.test}
  rows = {name: diagnostics.attention_stats(
              predict, videos, gt, model.streams, len(dataset.classes), cfg.localize.theta,
              model.loss_config.guide_sigma, top, cfg.data.seconds_per_segment)
          for name, videos in splits.items()}
  print(diagnostics.format_stats(rows, top))

  def pairs(videos):  # one video at a time
    for v in videos:
      features = v.load(model.streams)
      yield (np.concatenate([features[st] for st in model.streams], axis=1),
             diagnostics.segment_mask(gt[v.name], v.num_segments, cfg.data.seconds_per_segment))

  auc = diagnostics.linear_probe_auc(pairs(splits["train"]), pairs(splits["test"]))
  print(f"supervised linear probe on the features ({'+'.join(model.streams)}): test AUC {auc:.4f}")


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
