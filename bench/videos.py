"""Long benchmark videos written with PyAV (no TensorFlow or Beam imported here)."""

import os
import sys

import av

from wtal_tf import contract

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from video_helpers import smooth_frames  # pylint: disable=wrong-import-position

LONG_GOP = 250  # frames between key frames of the long video (x264's default maximum)
LONG_B_FRAMES = 3


def long_video(path: str, frames: int, height: int, width: int, codec: str = "ffv1",
               pix_fmt: str = "bgr0", options: dict | None = None) -> str:
  """A video of `frames` frames streamed to disk in chunks (a 4 s texture loop), lossless
  by default; codec, pix_fmt and encoder options as PyAV takes them."""
  chunk = smooth_frames(100, height, width, shift=1)
  container = av.open(path, "w")
  stream = container.add_stream(codec, rate=int(contract.FPS), options=options or {})
  stream.height, stream.width, stream.pix_fmt = height, width, pix_fmt
  for k in range(frames):
    for packet in stream.encode(av.VideoFrame.from_ndarray(chunk[k % len(chunk)],
                                                           format="rgb24")):
      container.mux(packet)
  for packet in stream.encode():
    container.mux(packet)
  container.close()
  return path


def long_h264(path: str, frames: int, height: int, width: int) -> str:
  """long_video as H.264 with a key frame every LONG_GOP frames and B-frames, as cameras
  write (chunks decode from the key frame before them, so the GOP is what chunking costs
  in decoding)."""
  return long_video(path, frames, height, width, codec="libx264", pix_fmt="yuv420p",
                    options={"g": str(LONG_GOP), "keyint_min": str(LONG_GOP),
                             "sc_threshold": "0", "bf": str(LONG_B_FRAMES)})
