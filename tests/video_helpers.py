"""Tiny lossless test videos written with PyAV (ffv1, bgr0: decoded bit-exactly)."""

import fractions

import av
import numpy as np


def write_video(path, frames, fps=25):
  """Writes uint8 RGB frames [N, H, W, 3] with ffv1 at `fps` (container from the suffix).

  N = 0 gives a valid zero-frame video in an .avi (an empty .mkv is not even opened).
  """
  frames = np.asarray(frames, np.uint8)
  container = av.open(str(path), "w")
  stream = container.add_stream("ffv1", rate=fractions.Fraction(fps).limit_denominator(1000))
  stream.height, stream.width = frames.shape[1:3]
  stream.pix_fmt = "bgr0"
  for f in frames:
    for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
      container.mux(packet)
  container.start_encoding()  # writes the header even without frames
  for packet in stream.encode():
    container.mux(packet)
  container.close()
  return str(path)


INDEX_STEP = 5  # pixel value per frame index in index_frames


def index_frames(n, height=8, width=8):
  """Frames whose every pixel is INDEX_STEP * index (n <= 52): the value tells the frame."""
  assert n * INDEX_STEP <= 256
  return np.broadcast_to((np.arange(n) * INDEX_STEP).astype(np.uint8)[:, None, None, None],
                         (n, height, width, 3)).copy()


def smooth_frames(n, height=48, width=64, shift=1, seed=0):
  """A smooth random texture translating `shift` pixels right per frame (TV-L1 friendly)."""
  rng = np.random.default_rng(seed)
  size = (height + 8, width + shift * n + 8)
  base = rng.uniform(0, 1, (size[0] // 4 + 2, size[1] // 4 + 2, 3))
  texture = np.kron(base, np.ones((4, 4, 1)))[:size[0], :size[1]]
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  texture = ndimage.gaussian_filter(texture, (2, 2, 0))
  texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255
  start = shift * n
  return np.stack([texture[4:4 + height, start - shift * k:start - shift * k + width]
                   for k in range(n)]).round().astype(np.uint8)
