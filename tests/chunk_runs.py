"""A run killed after some chunks of a video, and a run that records which chunks it
extracted: the restart tests on a local OUT and on an object store."""

import os
from unittest import mock

from wtal_tf.config import ExtractConfig
from wtal_tf.features import beam_pipeline as pipeline
from wtal_tf.features import beam_steps as steps
from wtal_tf.features import extraction
from wtal_tf.features import provenance


def run_killed_after(cfg: ExtractConfig, path: str, chunks: int) -> extraction.Extractor:
  """What a run with `cfg` killed after the first `chunks` chunks of `path` leaves in OUT;
  returns the Extractor it built (for the test's one-pass reference)."""
  weight_ids = {"rgb": provenance.weights_identity(cfg, "rgb")}
  made = {"settings": provenance.settings(cfg, weight_ids),
          "video_identity": provenance.video_identity(path)}
  fn = steps.ExtractChunkFn(cfg, "killed-run")
  fn.setup()
  for task in pipeline.plan(path, cfg.chunk_segments, made)[:chunks]:
    list(fn.process(task))
  return steps._extractor(cfg, weight_ids)  # pylint: disable=protected-access


def extract_counting_chunks(cfg: ExtractConfig, path: str) -> tuple[dict, list[int]]:
  """pipeline.extract(cfg)'s records, and the first segments of the chunks of `path` it
  extracted (not read back from OUT)."""
  starts = []
  real = extraction.Extractor.__call__

  def counted(self, video_path, start_segment=0, num_segments=None):
    if os.path.basename(video_path) == os.path.basename(path):
      starts.append(start_segment)
    return real(self, video_path, start_segment, num_segments)

  with mock.patch.object(extraction.Extractor, "__call__", counted):
    records = pipeline.extract(cfg)
  return records, sorted(starts)
