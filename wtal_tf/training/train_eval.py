"""Train, then localize and score the test set once with the final model."""

import os

from wtal_tf import locks
from wtal_tf.config import Config
from wtal_tf.data import datasets as data
from wtal_tf.evaluation import activitynet
from wtal_tf.evaluation import metrics
from wtal_tf.inference import batch
from wtal_tf.training import trainer


def train_and_evaluate(cfg: Config, output: str = "", per_class: bool = False,
                       flags_text: str = "") -> str:
  """Trains; writes the final detections and their scores; returns the report to print.

  The detections are those of training's final evaluation (the model after
  the last step), so the final model localizes and scores the test set once;
  they go to `output` (default MODEL_DIR/detections_<test_subset>.json), their
  scores beside them. flags_text: as trainer.train's.
  """
  output = batch.detections_path(cfg, output)  # checked before training, as the test set
  with trainer.holding(cfg.train.model_dir):  # (another training there is refused before
    # the data is read; the final detections are written as this model's)
    dataset = data.check_test_videos(data.load_dataset(cfg.data), cfg.data.test_subset)
    result = trainer.train(cfg, dataset, flags_text=flags_text)
    with locks.replacing_in(os.path.dirname(os.path.abspath(output))):  # (a localize there
      # checks the file, replaces it and removes its scores as one step, before or after)
      path = batch.write_detections(cfg, result.detections, output,
                                    cfg.localize.for_model(cfg.loss.cls_loss),
                                    scored=result.eval is not None,
                                    **batch.test_set_meta(cfg, result.steps))
      if result.eval is None:  # (trainer.train warned: nothing to score against)
        batch.remove_stale_scores(path)
        return (f"detections: {path}\nnot scored: subset {cfg.data.test_subset!r} of "
                f"{dataset.gt_source} has no annotated instance")
      metrics.write_scores(result.eval, cfg.eval.averages, activitynet.results_path(path), path)
    return (f"detections: {path}\n"
            + metrics.format_table(result.eval, cfg.eval.averages, per_class))
