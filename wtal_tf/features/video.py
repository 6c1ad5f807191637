"""Decoding a video file into RGB frames at 25 fps, streamed in fixed-size blocks.

Resampling rule (nearest-previous): output frame k stands for time
t_k = t_0 + k / TARGET_FPS, where t_0 is the presentation time of the first
decoded frame, and shows the last decoded frame whose presentation time is
<= t_k. Output frames cover the video up to the end of its last frame (its
time plus its duration), so a 50 fps video keeps frames 0, 2, 4, ..., a 25 fps
video keeps every frame and a 12.5 fps video shows each frame twice. Times are
compared exactly (rational arithmetic on the stream's time base).

Frames are yielded as soon as they are decoded: memory does not depend on the
video's length.
"""

import fractions
import os
from typing import Iterator, NamedTuple, Optional

import av
import numpy as np

from wtal_tf.data.contract import FPS as TARGET_FPS  # frames/s of the decoded output
from wtal_tf.errors import UserError


class Block(NamedTuple):
  """`frames` [n, H, W, 3] uint8 RGB, and the frame after them (None at the end of the video)."""
  frames: np.ndarray
  next_frame: Optional[np.ndarray]


def name(path: str) -> str:
  """A video's name in the dataset: its file name without the extension."""
  return os.path.splitext(os.path.basename(path))[0]


def _open(path: str):
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: cannot read as a video ({_reason(e)})") from None
  if not container.streams.video:
    container.close()
    raise UserError(f"{path}: no video stream")
  return container


def _reason(e: Exception) -> str:
  return getattr(e, "strerror", None) or str(e) or type(e).__name__


def frames(path: str, fps: float = TARGET_FPS) -> Iterator[np.ndarray]:
  """The frames of `path` at `fps` (nearest-previous resampling), uint8 [H, W, 3] RGB.

  Raises UserError naming the file if it cannot be opened, has no video stream,
  fails to decode, has no frames or changes its frame size.
  """
  period = fractions.Fraction(fps).limit_denominator(1_000_000) ** -1
  container = _open(path)
  try:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    time_base = stream.time_base or fractions.Fraction(1, 1_000_000)
    rate = stream.average_rate or stream.guessed_rate
    default_duration = (1 / fractions.Fraction(rate)) if rate else period
    origin = previous = previous_time = previous_duration = None
    size, decoded = None, 0  # the first frame's shape; frames decoded so far
    k = 0  # index of the next output frame
    try:
      for frame in container.decode(stream):
        if frame.pts is None:
          time = (previous_time + previous_duration) if previous is not None else 0
        else:
          time = frame.pts * time_base
        if origin is None:
          origin = time
        if previous is not None:
          while origin + k * period < time:
            yield previous
            k += 1
        previous = frame.to_ndarray(format="rgb24")
        if size is None:
          size = previous.shape
        elif previous.shape != size:
          raise UserError(f"{path}: the frame size changes from {size[1]}x{size[0]} to "
                          f"{previous.shape[1]}x{previous.shape[0]} at decoded frame {decoded}")
        decoded += 1
        previous_time = time
        previous_duration = (frame.duration * time_base) if frame.duration else default_duration
    except av.FFmpegError as e:
      raise UserError(f"{path}: corrupt video, decoding failed ({_reason(e)})") from None
    if previous is None:
      raise UserError(f"{path}: no frames (an empty video)")
    end = previous_time + previous_duration
    while origin + k * period < end:
      yield previous
      k += 1
  finally:
    container.close()


class Blocks:
  """Non-overlapping blocks of `block_frames` frames at `fps`, each with the frame after it.

  Iterating decodes the video once. The last frames (fewer than block_frames)
  are dropped. A video with fewer than block_frames frames is a UserError
  naming the file (raised at the end of the iteration). After the iteration,
  `num_frames` is the number of frames of the video at `fps`.
  """

  def __init__(self, path: str, block_frames: int, fps: float = TARGET_FPS):
    self.path, self.block_frames, self.fps = path, block_frames, fps
    self.num_frames = 0

  def __iter__(self) -> Iterator[Block]:
    buffer, self.num_frames = [], 0
    for frame in frames(self.path, self.fps):
      self.num_frames += 1
      if len(buffer) == self.block_frames:
        yield Block(np.stack(buffer), frame)
        buffer = []
      buffer.append(frame)
    if self.num_frames < self.block_frames:
      raise UserError(f"{self.path}: too short: {self.num_frames} frames at {self.fps:g} fps, "
                      f"fewer than one {self.block_frames}-frame segment")
    if len(buffer) == self.block_frames:
      yield Block(np.stack(buffer), None)
