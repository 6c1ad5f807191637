"""What made a feature file, so a rerun keeps features only when nothing that shapes them changed.

A video's status record stores its provenance: the code's FEATURE_VERSION,
the geometry and flow engine of the extraction, the identity of each
stream's weights (a SHA-256 of the weights files, or the random-init seed)
and the identity of the video file (size and modification time). A rerun
skips a video only when its stored provenance equals the current one for
every stream it extracts (wtal_tf/data/made.py compares them); otherwise it says
what changed and extracts again.
A run that extracts some streams again keeps the others' features only when
they were made as its own are (recorded), else removes them (other_streams).
"""

import glob
import os

from wtal_tf.config import ExtractConfig
from wtal_tf import contract
from wtal_tf.data import made as made_lib
from wtal_tf.features import weights
from wtal_tf.features.install_weights import file_digest

FEATURE_VERSION = 1  # raise when the code computes different features from the same inputs


def weights_identity(cfg: ExtractConfig, stream: str) -> str:
  """The identity of `stream`'s weights: "random-numpy:<seed>" (i3d.SeededHeNormal: the same
  under every Keras backend; "random:<seed>" were the earlier backend-dependent draws) or
  "sha256:<digest of the files>"."""
  if cfg.random_init_seed is not None:
    return f"random-numpy:{cfg.random_init_seed}"
  path = weights.weights_file(stream, cfg.checkpoint(stream))
  files = [path] if os.path.isfile(path) else sorted(
      glob.glob(glob.escape(path) + ".index") + glob.glob(glob.escape(path) + ".data-*"))
  if not files:  # a checkpoint directory: every checkpoint's files in it
    files = sorted(glob.glob(os.path.join(glob.escape(path), "*.index"))
                   + glob.glob(os.path.join(glob.escape(path), "*.data-*")))
  return "sha256:" + file_digest(files) if files else f"missing:{path}"


def video_identity(path: str) -> dict:
  stat = os.stat(path)
  return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def settings(cfg: ExtractConfig, weight_ids: dict[str, str]) -> dict:
  """The extraction's provenance, without the video: {"streams": {stream: weights id}, ...}."""
  made = {"feature_version": FEATURE_VERSION, "fps": contract.FPS,
          "segment_frames": contract.SEGMENT_FRAMES, "resize_shorter": cfg.resize_shorter,
          "crop_size": cfg.crop_size,
          made_lib.STREAMS_KEY: {s: weight_ids[s] for s in cfg.streams}}
  for s in cfg.streams:
    made.update({k: getattr(cfg, k) for k in contract.STREAM_SETTINGS.get(s, ())})
  return made


def other_streams(old_record, made: dict) -> tuple[dict, list[str]]:
  """(the provenance a video's new status record states, the streams whose feature
  files no longer fit it), for a run that extracted the streams of made["settings"].

  The old record's other streams keep their feature files when they were made as this
  run makes its own, from the same video file: the new provenance names them too
  (with the settings only they use, e.g. the flow engine). Otherwise those files were
  made another way (other geometry, another file under the video's name) and must go:
  a record names how every feature file of the video was made. Only the settings every
  stream shares are compared: flow's engine says nothing of the rgb features.
  """
  settings = made["settings"]
  old = old_record.get("provenance") if isinstance(old_record, dict) else None
  streams = made_lib.STREAMS_KEY
  if not isinstance(old, dict) or not isinstance(old.get(streams), dict):
    return settings, []
  others = {s: i for s, i in old[streams].items() if s not in settings[streams]}
  if not others:
    return settings, []
  if (old_record.get("video_identity") != made["video_identity"]
      or made_lib.changes(made_lib.shared(old), made_lib.shared(settings))):
    return settings, sorted(others)
  return {**old, **settings, streams: {**others, **settings[streams]}}, []
