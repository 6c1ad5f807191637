"""Timeline pictures of test videos (paper Fig. 4/5), one panel per trained model."""

import os

from wtal_tf import io_utils
from wtal_tf.config import Config
from wtal_tf.data import datasets as data
from wtal_tf.errors import UserError
from wtal_tf.inference.predictor import load_predictor
from wtal_tf.localization.localize import localize
from wtal_tf.viz import plotting
from wtal_tf.viz import timeline


def draw(cfg: Config, model_dirs: list[str], videos: list[str], num_videos: int,
         output_dir: str) -> list[str]:
  """Writes one PNG per video, one panel per model dir; returns the paths."""
  with io_utils.writable_dir(output_dir, "output dir"):  # (before the work)
    return _draw(cfg, model_dirs, videos, num_videos, output_dir)


def _draw(cfg: Config, model_dirs: list[str], videos: list[str], num_videos: int,
          output_dir: str) -> list[str]:
  models = [(os.path.normpath(d), load_predictor(d, cfg.localize)) for d in model_dirs]
  dataset = data.load_dataset(cfg.data, include_train=False, known_classes=models[0][1].classes)
  by_name = {v.name: v for v in dataset.test}
  unusable = [v for v in videos if v not in by_name and v in dataset.test_gt]
  if unusable:
    raise UserError(f"--videos: {unusable[0]} is skipped as invalid (--skip_invalid_videos; "
                    "the warning above says why)")
  unknown = [v for v in videos if v not in by_name]
  if unknown:
    raise UserError(f"--videos: not in the test subset {cfg.data.test_subset!r}: {unknown}")
  chosen = [by_name[v] for v in videos] or dataset.test[:num_videos]
  for model_dir, predict in models:
    predict.check_fits(dataset, model_dir)
  paths = []
  for v in chosen:
    panels = []
    for title, predict in models:
      outputs = predict(v.load(predict.streams))
      localize_cfg = predict.localize_config
      panels.append(timeline.Panel(f"{title}: {v.name}", outputs,
                                   localize(outputs, localize_cfg), localize_cfg))
    fig = timeline.render(panels, dataset.classes, cfg.data.seconds_per_segment,
                          dataset.test_gt.get(v.name))
    path = os.path.join(output_dir, f"{v.name}.png")
    plotting.save_png(fig, path)
    paths.append(path)
  return paths
