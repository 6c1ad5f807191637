"""Tiny test videos written with PyAV (by default ffv1, bgr0: decoded bit-exactly), and
byte-level edits of them (MP4 track matrix and box order, truncation, concatenation)."""

import fractions
import struct

import av
import numpy as np


def write_video(path, frames, fps=25, codec="ffv1", pix_fmt="bgr0", *, format=None, pts=None,
                time_base=None, rotation=None, codec_options=None, container_options=None,
                bit_rate=None, stream_options=None):
  """Writes uint8 RGB frames [N, H, W, 3] (or gray [N, H, W] uint8/uint16) and returns the path.

  Default: ffv1 in pix_fmt bgr0 at `fps`, lossless, the container from the suffix
  (or `format`). N = 0 gives a valid zero-frame video in an .avi (an empty .mkv
  is not even opened). `pts`: the frames' timestamps in `time_base` units
  (default 1/fps steps from 0): variable frame rate, a start offset.
  `rotation`: a display rotation in degrees counterclockwise (PyAV's
  set_display_rotation; read back as frame.rotation). `codec_options`: encoder
  options (e.g. {"g": "50", "bf": "3"} for libx264).
  """
  frames = np.asarray(frames)
  in_format = {1: "gray", 2: "gray16le"}[frames.dtype.itemsize] if frames.ndim == 3 else "rgb24"
  container = av.open(str(path), "w", format=format, options=container_options or {})
  rate = fractions.Fraction(fps).limit_denominator(1001)
  stream = container.add_stream(codec, rate=rate, options=stream_options or {})
  stream.height, stream.width = frames.shape[1:3]
  stream.pix_fmt = pix_fmt
  if bit_rate:
    stream.bit_rate = bit_rate
  if codec_options:
    stream.codec_context.options = dict(codec_options)
  if rotation is not None:
    stream.set_display_rotation(rotation)
  if time_base is not None:
    stream.codec_context.time_base = time_base
  for i, f in enumerate(frames):
    frame = av.VideoFrame.from_ndarray(f, format=in_format)
    if pts is not None:
      frame.pts = int(pts[i])
      frame.time_base = time_base or (1 / rate)
    for packet in stream.encode(frame):
      container.mux(packet)
  container.start_encoding()  # writes the header even without frames
  for packet in stream.encode():
    container.mux(packet)
  container.close()
  return str(path)


def boxes(data, start=0, end=None):
  """(type, offset, size) of the ISO BMFF boxes in data[start:end] (one level)."""
  end = len(data) if end is None else end
  out = []
  while start + 8 <= end:
    size, kind = struct.unpack(">I4s", data[start:start + 8])
    if size < 8:
      break
    out.append((kind.decode("latin-1"), start, size))
    start += size
  return out


def _box(data, path, start=0, end=None):
  """(offset, size) of the first box along `path` (e.g. ["moov", "trak", "tkhd"])."""
  for kind, offset, size in boxes(data, start, end):
    if kind == path[0]:
      return (offset, size) if len(path) == 1 else _box(data, path[1:], offset + 8, offset + size)
  raise KeyError("/".join(path))


def set_tkhd_matrix(path, matrix):
  """Overwrites the MP4/MOV track header matrix (9 ints, 16.16 / 2.30 fixed point, in file
  order a b u c d v x y w), as a camera writes it. Returns the path."""
  data = bytearray(open(path, "rb").read())
  offset, _ = _box(data, ["moov", "trak", "tkhd"])
  version = data[offset + 8]
  # version/flags 4, times and ids 20 (v0) or 32 (v1), reserved 8, layer etc. 8
  matrix_at = offset + 8 + 4 + (20 if version == 0 else 32) + 16
  data[matrix_at:matrix_at + 36] = struct.pack(">9i", *matrix)
  open(path, "wb").write(data)
  return path


# A phone held upright: turn 90 degrees clockwise (ffprobe: "rotation of -90.00 degrees").
PORTRAIT_MATRIX = (0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)


def move_udta_first(path):
  """Puts an MP4's user data box (with its `covr` cover art) before its track, so
  FFmpeg's demuxer makes the cover picture stream 0. Returns the path."""
  data = bytearray(open(path, "rb").read())
  offset, size = _box(data, ["moov"])
  kids = boxes(data, offset + 8, offset + size)
  order = ([k for k in kids if k[0] == "mvhd"] + [k for k in kids if k[0] == "udta"]
           + [k for k in kids if k[0] not in ("mvhd", "udta")])
  data[offset + 8:offset + size] = b"".join(bytes(data[o:o + n]) for _, o, n in order)
  open(path, "wb").write(data)
  return path


def write_video_with_cover(path, frames, cover, fps=25):
  """An MP4 (libx264 qp 0) with a JPEG cover picture (disposition attached_pic) that
  FFmpeg lists as stream 0, before the video. Returns the path."""
  container = av.open(str(path), "w")
  art = container.add_stream("mjpeg", rate=1)
  art.height, art.width = cover.shape[:2]
  art.pix_fmt = "yuvj420p"
  art.disposition = av.stream.Disposition.attached_pic
  video = container.add_stream("libx264", rate=fps)
  video.height, video.width = frames.shape[1:3]
  video.pix_fmt = "yuv444p"
  video.codec_context.options = {"qp": "0"}
  picture = av.VideoFrame.from_ndarray(cover, format="rgb24").reformat(format="yuvj420p")
  for packet in list(art.encode(picture)) + list(art.encode()):
    container.mux(packet)
  for f in frames:
    for packet in video.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
      container.mux(packet)
  for packet in video.encode():
    container.mux(packet)
  container.close()
  return move_udta_first(str(path))


def truncate(path, fraction, out=None):
  """A copy of `path` (or `path` itself) cut to `fraction` of its bytes. Returns its path."""
  data = open(path, "rb").read()
  out = str(out or path)
  open(out, "wb").write(data[:int(len(data) * fraction)])
  return out


def concatenate(paths, out):
  """The bytes of `paths` one after the other (MPEG-TS files concatenate into one stream)."""
  with open(out, "wb") as f:
    for p in paths:
      f.write(open(p, "rb").read())
  return str(out)


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


CHUNKED_FRAMES = {"long": 80, "short": 40}
CHUNKED_CHUNKS = {"long": 3, "short": 1}  # at chunks of 2 segments: 5 segments in 3 chunks,
# and 2 segments in 1


def write_chunked_videos(root):
  """CHUNKED_FRAMES as ffv1 videos <name>.mkv in root; returns root."""
  for k, (name, n) in enumerate(CHUNKED_FRAMES.items()):
    write_video(root / f"{name}.mkv", smooth_frames(n, 48, 64, seed=k + 1))
  return root
