"""Detections and a timeline picture for one new video, from a trained model.

The video goes through the same extraction as `wtal_tf.extract` (the streams
the model was trained on), then the model, localization and export of
`wtal_tf.localize`.
"""

import dataclasses
import os

from absl import logging

from wtal_tf import io_utils
from wtal_tf.config import Config, DataConfig
from wtal_tf import contract
from wtal_tf.data import made as made_lib
from wtal_tf.errors import UserError
from wtal_tf.evaluation import activitynet
from wtal_tf.features import extraction
from wtal_tf.features import provenance
from wtal_tf.features import video as video_lib
from wtal_tf.features import weights
from wtal_tf.inference import batch
from wtal_tf.inference.predictor import load_predictor
from wtal_tf.modeling import checkpoints
from wtal_tf.viz import plotting
from wtal_tf.viz import timeline


def _check_made_alike(cfg: Config, predictor) -> None:
  """A UserError when the model's training features (its model.json's features_made, when
  wtal_tf.extract made them) were made otherwise than this command would make the
  video's: other geometry or weights give features the model was not trained on."""
  if not predictor.features_made:
    logging.warning("%s: the model %s: the video's features are not checked against them",
                    cfg.train.model_dir, checkpoints.UNRECORDED)
    return
  extract = dataclasses.replace(cfg.extract, streams=predictor.streams)
  now = provenance.settings(extract, {s: provenance.weights_identity(extract, s)
                                      for s in predictor.streams})
  differ = made_lib.differences(predictor.features_made, now)
  if differ:
    fix = ("train it on features this version of the code makes" if any(
        d.startswith("feature_version ") for d in differ) else
           "pass the extraction flags its features were made with")
    raise UserError(f"{cfg.train.model_dir}: the model was trained on features made otherwise "
                    f"than these flags make them (trained vs now: {'; '.join(differ)}): {fix}")


def detect_video(cfg: Config) -> tuple[str, str | None]:
  """Writes the ActivityNet JSON (and the timeline PNG if asked); returns their paths."""
  model_dir, path = cfg.train.model_dir, cfg.detect.video
  if not os.path.isfile(path):
    raise UserError(f"{path}: video not found")
  output = cfg.detect.output or activitynet.default_video_path(model_dir, video_lib.name(path))
  picture = cfg.detect.timeline or None
  # Before any model loading or extraction, which can take minutes.
  taken = {path: "video of --video", **checkpoints.model_files(model_dir)}
  io_utils.check_writable(output, "detections file", taken)
  if picture:
    if not picture.lower().endswith(".png"):
      raise UserError(f"--timeline={picture}: the timeline is a PNG picture: give a .png name")
    io_utils.check_writable(picture, "timeline picture",
                            {**taken, output: "detections file this command writes"})
  predictor = load_predictor(model_dir, cfg.localize)
  wrong = {s: d for s, d in predictor.feature_dims.items() if d != contract.FEATURE_DIM}
  if wrong:
    raise UserError(f"{model_dir}: the model was trained on {wrong}-dimensional features, "
                    f"not the {contract.FEATURE_DIM}-d I3D features extracted from a video")
  predictor.check_timing(DataConfig().segment_timing(),  # (extraction's: the default's)
                         model_dir, "detect extracts features of",  # (before loading I3D)
                         "localize features made at the model's time base instead")
  try:
    extractor = extraction.Extractor(cfg.extract, predictor.streams)
  except weights.MissingWeights as e:  # (the model's streams, not --streams, are extracted)
    raise UserError(f"{model_dir}: the model has a {e.stream} stream, and {e.need}") from None
  _check_made_alike(cfg, predictor)
  result = extractor(path)
  name, classes = video_lib.name(path), predictor.classes
  results, outputs, dets = batch.detect_one(predictor, result.features, classes,
                                            contract.SECONDS_PER_SEGMENT, result.duration)
  batch.write_detections(cfg, {name: results}, output, predictor.localize_config,
                         video=os.path.abspath(path))
  if picture:
    panel = timeline.Panel(f"{os.path.normpath(model_dir)}: {name}", outputs, dets,
                           predictor.localize_config)
    plotting.save_png(timeline.render([panel], classes, contract.SECONDS_PER_SEGMENT,
                                      duration=result.duration), picture)
  return output, picture
