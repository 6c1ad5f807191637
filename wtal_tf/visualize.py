"""Draws timelines of test videos to PNG files (paper Fig. 4/5).

python -m wtal_tf.visualize --flagfile=... --data_dir=DIR --model_dir=DIR \
    (--videos=a,b | --num_videos=N) --output_dir=DIR [--compare_model_dir=DIR]
"""

import os

from wtal_tf import checkpointing
from wtal_tf import cli
from wtal_tf import data
from wtal_tf import localization
from wtal_tf import plotting
from wtal_tf import timeline
from wtal_tf.config import Config
from wtal_tf.errors import UserError
from wtal_tf.inference import Predictor


def draw(cfg: Config, model_dirs: list[str], videos: list[str], num_videos: int,
         output_dir: str) -> list[str]:
  """Writes one PNG per video, one panel per model dir; returns the paths."""
  dataset = data.load_dataset(cfg.data, include_train=False)
  by_name = {v.name: v for v in dataset.test}
  unknown = [v for v in videos if v not in by_name]
  if unknown:
    raise UserError(f"--videos: not in the test subset {cfg.data.test_subset!r}: {unknown}")
  chosen = [by_name[v] for v in videos] or dataset.test[:num_videos]
  models = []
  for model_dir in model_dirs:
    model, spec = checkpointing.restore(model_dir)
    models.append((os.path.normpath(model_dir),
                   Predictor(model, spec["feature_dims"], cfg.localize)))
  paths = []
  for v in chosen:
    panels = []
    for title, predict in models:
      outputs = predict(v.load(predict.streams))
      localize_cfg = predict.localize_config
      panels.append(timeline.Panel(f"{title}: {v.name}", outputs,
                                   localization.localize(outputs, localize_cfg), localize_cfg))
    fig = timeline.render(panels, dataset.classes, cfg.data.seconds_per_segment,
                          dataset.test_gt.get(v.name))
    path = os.path.join(output_dir, f"{v.name}.png")
    plotting.save_png(fig, path)
    paths.append(path)
  return paths


def main(argv):
  del argv
  f = cli.FLAGS
  cfg = cli.config_from_flags()
  dirs = [cli.require(cfg.train.model_dir, "model_dir")]
  if f.compare_model_dir:
    dirs.append(f.compare_model_dir)
  for path in draw(cfg, dirs, f.videos, f.num_videos, cli.require(f.output_dir, "output_dir")):
    print(path)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
