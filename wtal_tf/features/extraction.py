"""I3D features of one video, or of a chunk of its segments: decode, preprocess, TV-L1, encode.

A video of N frames at 25 fps gives T = floor(N / 16) segments; the last
N mod 16 frames are dropped. Segments are encoded `batch_segments` at a time,
so memory depends on the batch and the frame size, not on the video's length.
A chunk (segments start ... start + count - 1) decodes from the key frame
before it and gives exactly those rows of the whole video's features.
"""

import dataclasses
import time
from typing import Optional, Sequence

import numpy as np

from wtal_tf.config import ExtractConfig
from wtal_tf.contract import FEATURE_DIM, FPS, SEGMENT_FRAMES
from wtal_tf.features import encoder
from wtal_tf.features import flow
from wtal_tf.features import preprocess
from wtal_tf.features import video


@dataclasses.dataclass
class VideoFeatures:
  features: dict[str, np.ndarray]  # {stream: float32 [T, FEATURE_DIM]}
  num_frames: int  # frames at FPS (before dropping the last N mod SEGMENT_FRAMES); a
  # chunk's share: its first frame up to the next chunk's
  seconds: float  # wall time of decoding and extraction
  total_frames: Optional[int] = None  # the whole video's frames at FPS, if decoding reached
  # its end (always for a whole video)
  warning: Optional[str] = None  # a damaged file's one-line warning (video.Blocks)

  @property
  def duration(self) -> float:
    """Seconds of video (frames at FPS / FPS)."""
    return self.num_frames / FPS


def build_encoders(cfg: ExtractConfig, streams: Sequence[str]) -> dict:
  """{stream: SegmentEncoder} with the configured weights (UserError for a missing one)."""
  return {s: encoder.build_encoder(s, cfg.checkpoint(s), random_init_seed=cfg.random_init_seed)
          for s in streams}


class Extractor:
  """Extracts the configured streams of one video at a time; build once, call per video."""

  def __init__(self, cfg: ExtractConfig, streams: Sequence[str] | None = None, encoders=None):
    self.cfg = cfg
    self.streams = tuple(streams or cfg.streams)
    self.encoders = encoders or build_encoders(cfg, self.streams)

  def _inputs(self, block: video.Block) -> dict[str, np.ndarray]:
    """One segment's network inputs {stream: float32 [SEGMENT_FRAMES, crop, crop, C]}."""
    shorter, crop = self.cfg.resize_shorter, self.cfg.crop_size
    inputs = {}
    if "rgb" in self.streams:
      inputs["rgb"] = preprocess.rgb(block.frames, shorter, crop)
    if "flow" in self.streams:
      gray = preprocess.gray(block.frames, shorter, crop)
      next_gray = (None if block.next_frame is None
                   else preprocess.gray(block.next_frame[None], shorter, crop)[0])
      inputs["flow"] = flow.segment_flow(gray, next_gray, self.cfg.flow_engine)
    return inputs

  def _encode(self, batch: list[dict], out: dict[str, list]) -> None:
    for s in self.streams:
      out[s].append(self.encoders[s](np.stack([b[s] for b in batch])))

  def __call__(self, path: str, start_segment: int = 0,
               num_segments: Optional[int] = None) -> VideoFeatures:
    """The features of the video at `path` (or of segments start_segment ... +
    num_segments - 1; None: to the end); UserError naming it if it is unusable."""
    start = time.perf_counter()
    blocks = video.Blocks(path, SEGMENT_FRAMES, start_block=start_segment,
                          num_blocks=num_segments)
    out, batch = {s: [] for s in self.streams}, []
    for block in blocks:
      batch.append(self._inputs(block))
      if len(batch) == self.cfg.batch_segments:
        self._encode(batch, out)
        batch = []
    if batch:
      self._encode(batch, out)
    features = {s: np.concatenate(out[s]).astype(np.float32) if out[s]
                else np.zeros((0, FEATURE_DIM), np.float32) for s in self.streams}
    return VideoFeatures(features, blocks.num_frames, time.perf_counter() - start,
                         blocks.total_frames, blocks.warning)
