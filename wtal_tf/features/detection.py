"""Detections and a timeline picture for one new video, from a trained model.

The video goes through the same extraction as `wtal_tf.extract` (the streams
the model was trained on), then the model, localization and export of
`wtal_tf.localize`.
"""

import os

from wtal_tf import checkpointing
from wtal_tf import export
from wtal_tf import io_utils
from wtal_tf import localization
from wtal_tf import plotting
from wtal_tf import timeline
from wtal_tf.config import Config
from wtal_tf.errors import UserError
from wtal_tf.features import extraction
from wtal_tf.features import i3d
from wtal_tf.features import video as video_lib
from wtal_tf.inference import Predictor

SECONDS_PER_SEGMENT = i3d.SEGMENT_FRAMES / video_lib.TARGET_FPS


def default_output(model_dir: str, video: str) -> str:
  return os.path.join(model_dir, f"detections_{video_lib.name(video)}.json")


def detect_video(cfg: Config) -> tuple[str, str | None]:
  """Writes the ActivityNet JSON (and the timeline PNG if asked); returns their paths."""
  model_dir, path = cfg.train.model_dir, cfg.detect.video
  if not os.path.isfile(path):
    raise UserError(f"{path}: video not found")
  model, spec = checkpointing.restore(model_dir)
  extraction.check_weights(cfg.extract, model.streams)
  wrong = {s: d for s, d in spec["feature_dims"].items() if d != i3d.FEATURE_DIM}
  if wrong:
    raise UserError(f"{model_dir}: the model was trained on {wrong}-dimensional features, "
                    f"not the {i3d.FEATURE_DIM}-d I3D features extracted from a video")
  result = extraction.Extractor(cfg.extract, model.streams)(path)
  predictor = Predictor(model, spec["feature_dims"], cfg.localize)
  outputs = predictor(result.features)
  localize_cfg = predictor.localize_config
  dets = localization.localize(outputs, localize_cfg)
  name = video_lib.name(path)
  results = {name: export.video_results(dets, spec["classes"], SECONDS_PER_SEGMENT,
                                        result.duration)}
  output = cfg.output or default_output(model_dir, path)
  io_utils.write_json(output, export.document(
      results, {"model_dir": os.path.abspath(model_dir), "video": os.path.abspath(path)}))
  picture = cfg.detect.timeline or None
  if picture:
    panel = timeline.Panel(f"{os.path.normpath(model_dir)}: {name}", outputs, dets,
                           localize_cfg)
    plotting.save_png(timeline.render([panel], spec["classes"], SECONDS_PER_SEGMENT), picture)
  return output, picture
