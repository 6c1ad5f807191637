"""Decoding a video file into RGB frames at 25 fps, as FFmpeg's command line does by
default, streamed in fixed-size blocks.

What is decoded (each as `ffmpeg -i FILE` does without options, FFmpeg 7/8):

* Stream: the video stream with the largest picture (width x height, +5,000,000
  for the "default" disposition; the first on a tie), never an attached cover
  picture (disposition attached_pic, e.g. an MP4's `covr` art or a Matroska
  image attachment). ffmpeg would take a cover as a last resort; a file with
  only a cover is a UserError here ("no video stream").
* Orientation: the display matrix (the stream's side data, e.g. an MP4/MOV
  track header matrix or a phone's rotation; carried by every decoded frame) is
  applied to each frame before anything else, as ffmpeg's autorotate filters:
  rotation theta = -round(av_display_rotation_get(m)) mod 360; 90 ->
  transpose=clock (cclock_flip if m[3] > 0), 180 -> hflip if m[0] < 0 and
  vflip if m[4] < 0, 270 -> transpose=cclock (clock_flip if m[3] < 0), 0 ->
  vflip if m[4] < 0. An angle that is not within 1 degree of a multiple of 90
  (no camera writes one) is not applied (ffmpeg would rotate by it, filling
  the corners black); a warning names the file.
* Frame size: taken from each frame; a stream whose size changes midway yields
  every frame at its own size (ffmpeg rescales to the first size; the
  preprocessing here resizes every frame to the same crop instead).
* Pixels: any pixel format (8/10/12/16-bit YUV, full or limited range, gray,
  RGB, ...) is converted to rgb24 uint8 by swscale with the frame's own
  colorspace and range tags. Pixels are not resampled to square (anamorphic
  video keeps its stored size) and nothing is deinterlaced, as ffmpeg.
* Containers: whatever FFmpeg reads; the file content decides, not the
  extension. `VIDEO_EXTENSIONS` lists the names `list_videos` takes.

Resampling rule (nearest-previous): output frame k stands for time
t_k = t_0 + k / TARGET_FPS, where t_0 is the presentation time of the first
decoded frame (so a file whose timestamps start at 10 s, or at an MPEG-TS
offset, starts at output frame 0), and shows the last decoded frame whose
presentation time is <= t_k. Output frames cover the video up to the end of its
last frame (its time plus its duration), so a 50 fps video keeps frames 0, 2,
4, ..., a 25 fps video keeps every frame and a 12.5 fps video shows each frame
twice. Variable frame rate needs nothing special: only presentation times
count. Times are compared exactly (rational arithmetic on the stream's time
base); a frame without a timestamp follows the previous one by its duration.

Damaged files (the decision for a file cut short or corrupt in the middle): as
ffmpeg, decoding goes on as far as it can. A read error ends the stream like
the end of the file; a packet that fails to decode is skipped. What was
decoded is yielded, and the iterator's `warning` (None for a sound file) is a
one-line message naming the file, what was wrong (cut short: the decoded
video ends before the duration its header declares, by more than 0.5 s + 1 %;
packets flagged corrupt; packets that failed to decode; a read error) and the
frame counts; it is also logged (`logging.warning`). It is a UserError naming
the file only when the file cannot be opened (an MP4/MOV cut short before its
index, the `moov` box at the end, cannot), has no video stream, yields no
frame at all, or more than 2/3 of its decode attempts fail (ffmpeg's
-max_error_rate default). A file cut short whose header then declares no
duration (MPEG-TS and MPEG-PS, whose durations FFmpeg measures from the end of
the file; an ASF/WMV, whose header FFmpeg no longer trusts) cannot be told
from a short one.

Frames are yielded as soon as they are decoded: memory does not depend on the
video's length.
"""

import fractions
import logging
import math
import os
from typing import Iterator, NamedTuple, Optional, Sequence

import av
import numpy as np

from wtal_tf.errors import UserError

TARGET_FPS = 25.0  # frames per second of the decoded output (as kinetics-i3d)

# File names list_videos takes (compared in lower case): what cameras, phones and
# their software write, all read by FFmpeg (which goes by the content, not the name).
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".f4v",  # ISO BMFF / QuickTime
    ".mkv", ".webm",                                          # Matroska
    ".avi", ".divx",                                          # AVI
    ".mpg", ".mpeg", ".vob", ".mod",                          # MPEG-PS (DVD, SD camcorders)
    ".ts", ".mts", ".m2ts", ".m2t", ".tod",                   # MPEG transport stream (AVCHD, HDV)
    ".flv", ".wmv", ".asf", ".ogv", ".dv", ".mxf",
)
MAX_ERROR_RATE = 2 / 3  # failed / (decoded + failed) above which a video fails (ffmpeg's default)
CUT_SHORT_SLACK_S = 0.5  # decoded duration may fall short of the declared one by this + 1 %
CUT_SHORT_SLACK_FRACTION = 0.01
_MICROSECOND = fractions.Fraction(1, 1_000_000)

_LOG = logging.getLogger(__name__)


class Block(NamedTuple):
  """`frames` [n, H, W, 3] uint8 RGB, and the frame after them (None at the end of the video).

  When the frame size changes inside the block, `frames` is a list of n
  [H_i, W_i, 3] arrays instead of one array.
  """
  frames: np.ndarray
  next_frame: Optional[np.ndarray]


def name(path: str) -> str:
  """A video's name in the dataset: its file name without the extension."""
  return os.path.splitext(os.path.basename(path))[0]


def is_video_name(filename: str) -> bool:
  """Whether list_videos takes a file of this name (a VIDEO_EXTENSIONS suffix, any case)."""
  return filename.lower().endswith(VIDEO_EXTENSIONS) and not filename.startswith(".")


def list_videos(video_dir: str) -> tuple[list[str], list[str]]:
  """(the video files directly in `video_dir`, sorted; the names of the other entries, sorted).

  A video file is a regular file (or a link to one) whose name ends with one of
  VIDEO_EXTENSIONS in any letter case and does not start with "." (hidden
  files, e.g. macOS's "._clip.mp4", are ignored). Everything else in the
  directory (other names, hidden files, subdirectories) is returned as ignored.
  UserError if the directory is missing, holds no video, or two videos have the
  same name without extension (they would write the same feature file).
  """
  if not video_dir or not os.path.isdir(video_dir):
    raise UserError(f"{video_dir or '--video_dir'}: video directory not found")
  paths, ignored = [], []
  for entry in sorted(os.listdir(video_dir)):
    path = os.path.join(video_dir, entry)
    if is_video_name(entry) and os.path.isfile(path):
      paths.append(path)
    else:
      ignored.append(entry)
  if not paths:
    raise UserError(f"{video_dir}: no video files ({len(ignored)} other entries ignored; "
                    f"names ending {' '.join(VIDEO_EXTENSIONS)}, any case)")
  stems = {}
  for p in paths:
    other = stems.setdefault(name(p), p)
    if other != p:
      raise UserError(f"{video_dir}: {os.path.basename(other)} and {os.path.basename(p)} "
                      "would write the same feature file")
  return paths, ignored


def _open(path: str):
  try:
    return av.open(path)
  except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: cannot read as a video ({_reason(e)})") from None


def _reason(e: Exception) -> str:
  return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _is_cover(stream) -> bool:
  return bool(stream.disposition & av.stream.Disposition.attached_pic)


def select_stream(streams: Sequence):
  """The video stream ffmpeg maps by default, never a cover picture; None if there is none.

  Score = width x height + 5,000,000 if the stream has the "default"
  disposition; the highest score wins, the first on a tie (ffmpeg's
  map_auto_video; ffmpeg scores a cover 1, here it is never chosen).
  """
  best, best_score = None, -1
  for s in streams:
    if s.type != "video" or _is_cover(s):
      continue
    ctx = s.codec_context
    score = (getattr(ctx, "width", 0) or 0) * (getattr(ctx, "height", 0) or 0) + 5_000_000 * bool(
        s.disposition & av.stream.Disposition.default)
    if score > best_score:
      best, best_score = s, score
  return best


def _c_round(x: float) -> float:
  """C's round(): halves away from zero."""
  return math.copysign(math.floor(abs(x) + 0.5), x)


def display_rotation(matrix: Optional[Sequence[int]]) -> float:
  """ffmpeg's get_rotation: the clockwise angle in [0, 360) the display matrix turns the
  picture by (NaN for a degenerate matrix, 0 for none)."""
  if matrix is None:
    return 0.0
  m = [v / 65536.0 for v in matrix[:6]]
  scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
  if scale0 == 0 or scale1 == 0:
    return math.nan
  counterclockwise = -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))
  theta = -_c_round(counterclockwise)
  return theta - 360 * math.floor(theta / 360 + 0.9 / 360)


def orient(image: np.ndarray, matrix: Optional[Sequence[int]]) -> np.ndarray:
  """`image` [H, W, C] as displayed: ffmpeg's autorotate filters for the display matrix."""
  if matrix is None:
    return image
  theta = display_rotation(matrix)
  if abs(theta - 90) < 1:
    out = image.transpose(1, 0, 2) if matrix[3] > 0 else np.rot90(image, -1)  # cclock_flip / clock
  elif abs(theta - 180) < 1:
    out = image
    if matrix[0] < 0:
      out = out[:, ::-1]  # hflip
    if matrix[4] < 0:
      out = out[::-1]  # vflip
  elif abs(theta - 270) < 1:
    out = np.rot90(image, -1)[::-1] if matrix[3] < 0 else np.rot90(image, 1)  # clock_flip / cclock
  elif abs(theta) < 1 and matrix[4] < 0:
    out = image[::-1]
  else:
    return image  # no turn, or an odd angle (warned about by the decoder)
  return np.ascontiguousarray(out)


def _frame_matrix(frame) -> Optional[tuple[int, ...]]:
  try:
    data = frame.side_data["DISPLAYMATRIX"]
  except KeyError:
    return None
  return tuple(int(v) for v in np.frombuffer(bytes(data), "<i4", 9))


def _metadata_duration(stream) -> Optional[fractions.Fraction]:
  """A Matroska track's DURATION tag (HH:MM:SS.nnnnnnnnn) in seconds."""
  text = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
  if not text:
    return None
  try:
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + fractions.Fraction(s)
  except ValueError:
    return None


class _Video:
  """One open video file: its container, the chosen stream and counters of what was decoded."""

  def __init__(self, path: str):
    self.path = path
    self.container = _open(path)
    try:
      self.stream = select_stream(self.container.streams)
      if self.stream is None:
        covers = sum(_is_cover(s) for s in self.container.streams.video)
        raise UserError(f"{path}: no video stream" + (" (only a cover picture)" if covers else ""))
    except BaseException:
      self.container.close()
      raise
    self.stream.thread_type = "AUTO"
    self.time_base = self.stream.time_base or _MICROSECOND
    rate = self.stream.average_rate or self.stream.guessed_rate
    self.frame_duration = (1 / fractions.Fraction(rate)) if rate else None
    self.decoded = self.failed = self.corrupt = 0  # frames out; packets failing; flagged corrupt
    self.read_error = self.decode_error = None  # the last reason of each

  def close(self):
    self.container.close()

  def declared_duration(self, whole_file: bool = False) -> Optional[fractions.Fraction]:
    """The duration (seconds, from the stream's first timestamp) the header declares for the
    video stream: the largest of its duration, its DURATION tag (Matroska) and its frame
    count / rate; if it declares none, the file's duration when the file has no other
    stream (or `whole_file`: then it may include audio, or be FFmpeg's estimate)."""
    s, values = self.stream, []
    start = (s.start_time or 0) * self.time_base
    # Matroska's durations run from time 0, not from the first timestamp.
    shift = start if "matroska" in self.container.format.name else 0
    if s.duration:
      values.append(s.duration * self.time_base)
    tagged = _metadata_duration(s)
    if tagged:
      values.append(tagged - shift)
    if s.frames and self.frame_duration:
      values.append(s.frames * self.frame_duration)
    if not values and self.container.duration and (whole_file or len(self.container.streams) == 1):
      values.append(fractions.Fraction(self.container.duration, 1_000_000) - shift)
    return max(values) if values else None

  def packets_and_frames(self) -> Iterator:
    """The stream's decoded frames from the current position, in presentation order.

    As ffmpeg: a read error ends the stream (the decoder is drained), a packet
    that fails to decode is skipped; both are counted.
    """
    demux = self.container.demux(self.stream)
    try:
      while True:
        try:
          packet = next(demux)
        except StopIteration:
          return
        except av.FFmpegError as e:
          self.read_error, packet = _reason(e), None  # None drains the decoder
        if packet is not None and packet.is_corrupt:
          self.corrupt += 1
        try:
          decoded = self.stream.decode(packet)
        except av.FFmpegError as e:
          self.failed += 1
          self.decode_error, decoded = _reason(e), ()
        for frame in decoded:
          self.decoded += 1
          yield frame
        if packet is None:
          return
    finally:
      demux.close()

  def timed(self, frames: Iterator, period: fractions.Fraction):
    """(time in s, duration in s, frame) of `frames`; a frame without a timestamp follows
    the previous one by its duration (the first is at 0)."""
    default_duration = self.frame_duration or period
    previous_time = previous_duration = None
    try:
      for frame in frames:
        if frame.pts is not None:
          time = frame.pts * self.time_base
        elif previous_time is not None:
          time = previous_time + previous_duration
        else:
          time = fractions.Fraction(0)
        duration = (frame.duration * self.time_base) if frame.duration else default_duration
        yield time, duration, frame
        previous_time, previous_duration = time, duration
    finally:
      frames.close()


class _Decoding:
  """Output frames k of one iteration over a video, and what the iteration found out."""

  def __init__(self, path: str, fps: float):
    self.path, self.fps = path, fps
    self.period = fractions.Fraction(fps).limit_denominator(1_000_000) ** -1
    self.decoded_frames = 0  # frames the decoder produced
    self.total_frames = None  # frames of the video at fps, once the end was reached
    self.warning = None
    self._odd_angles = set()

  def _image(self, held: list) -> np.ndarray:
    if held[1] is None:
      frame = held[0]
      matrix = _frame_matrix(frame)
      if matrix is not None:
        theta = display_rotation(matrix)
        if not math.isnan(theta) and min(abs(theta - a) for a in (0, 90, 180, 270, 360)) >= 1:
          self._odd_angles.add(round(theta, 1))
      held[1] = orient(frame.to_ndarray(format="rgb24"), matrix)
      held[0] = None
    return held[1]

  def output(self) -> Iterator[np.ndarray]:
    """The output frames, uint8 [H, W, 3] RGB."""
    video = _Video(self.path)
    try:
      yield from self._resample(video, video.timed(video.packets_and_frames(), self.period))
    finally:
      self.decoded_frames += video.decoded
      video.close()

  def _resample(self, video: _Video, timed: Iterator) -> Iterator[np.ndarray]:
    """The nearest-previous rule over `timed`."""
    period, held = self.period, None  # held: [frame, its image] of the last decoded frame
    origin = last_time = last_duration = None
    k = 0  # the next output frame
    for time, duration, frame in timed:
      if origin is None:
        origin = time
      if held is not None:
        while origin + k * period < time:
          yield self._image(held)
          k += 1
      held, last_time, last_duration = [frame, None], time, duration
    if held is None:
      self._fail(video)
    end = last_time + last_duration
    while origin + k * period < end:
      yield self._image(held)
      k += 1
    self.total_frames = k
    attempts = video.decoded + video.failed
    if video.failed > MAX_ERROR_RATE * attempts:
      raise UserError(f"{self.path}: corrupt video, {video.failed} of {attempts} decode "
                      f"attempts failed ({video.decode_error})")
    start = video.stream.start_time
    self._report(video, end - (origin if start is None else start * video.time_base))

  def _fail(self, video: _Video):
    """The UserError for a video that yielded no frame at all."""
    if video.failed or video.read_error:
      raise UserError(f"{self.path}: corrupt video, no frame could be decoded "
                      f"({video.decode_error or video.read_error})")
    raise UserError(f"{self.path}: no frames (an empty video)")

  def _report(self, video: _Video, decoded_duration: Optional[fractions.Fraction]) -> None:
    """Sets and logs the warning if anything was wrong; `decoded_duration`: from the stream's
    start to the end of its last frame."""
    problems = []
    declared = video.declared_duration()
    if (declared is not None and decoded_duration
        < declared * (1 - CUT_SHORT_SLACK_FRACTION) - CUT_SHORT_SLACK_S):
      problems.append(f"cut short or damaged: its frames end at {float(decoded_duration):.2f} "
                      f"s of the {float(declared):.2f} s its header declares")
    if video.corrupt:
      problems.append(f"{video.corrupt} packets flagged corrupt")
    if video.failed:
      problems.append(f"{video.failed} packets failed to decode ({video.decode_error})")
    if video.read_error:
      problems.append(f"reading stopped early ({video.read_error})")
    if self._odd_angles:
      problems.append("display rotation by "
                      f"{', '.join(f'{a:g}' for a in sorted(self._odd_angles))} degrees not "
                      "applied (not a multiple of 90)")
    if problems:
      self.warning = (f"{self.path}: {'; '.join(problems)}; decoded {video.decoded} "
                      f"frames, {self.total_frames} at {self.fps:g} fps")
      _LOG.warning("%s", self.warning)


class Frames:
  """Iterating yields the frames of `path` at `fps` (nearest-previous resampling), uint8
  [H, W, 3] RGB, each upright and at its own size.

  Raises UserError naming the file if it cannot be opened, has no video stream
  or yields no frame (see the module docstring for damaged files). After the
  iteration: `num_frames` (frames yielded), `decoded_frames` (frames the
  decoder produced) and `warning` (None, or the one-line warning logged for a
  damaged file).
  """

  def __init__(self, path: str, fps: float = TARGET_FPS):
    self.path, self.fps = path, fps
    self.num_frames = self.decoded_frames = 0
    self.warning = None

  def __iter__(self) -> Iterator[np.ndarray]:
    decoding = _Decoding(self.path, self.fps)
    self.num_frames = 0
    try:
      for image in decoding.output():
        self.num_frames += 1
        yield image
    finally:
      self.decoded_frames, self.warning = decoding.decoded_frames, decoding.warning


def frames(path: str, fps: float = TARGET_FPS) -> Frames:
  """The frames of `path` at `fps` (an iterable; see Frames)."""
  return Frames(path, fps)


def _stack(images: list) -> np.ndarray:
  shape = images[0].shape
  return np.stack(images) if all(i.shape == shape for i in images) else list(images)


class Blocks:
  """Non-overlapping blocks of `block_frames` frames at `fps`, each with the frame after it.

  Iterating decodes the video once. The last frames (fewer than block_frames)
  are dropped. A video with fewer than block_frames frames is a UserError
  naming the file (raised at the end of the iteration). After the iteration,
  `num_frames` is the number of frames of the video at `fps`,
  `decoded_frames` the frames the decoder produced and `warning` None or the
  one-line warning logged for a damaged file.
  """

  def __init__(self, path: str, block_frames: int, fps: float = TARGET_FPS):
    self.path, self.block_frames, self.fps = path, block_frames, fps
    self.num_frames = self.decoded_frames = 0
    self.warning = None

  def __iter__(self) -> Iterator[Block]:
    decoding = _Decoding(self.path, self.fps)
    buffer, self.num_frames = [], 0
    try:
      for frame in decoding.output():
        self.num_frames += 1
        if len(buffer) == self.block_frames:
          yield Block(_stack(buffer), frame)
          buffer = []
        buffer.append(frame)
      if self.num_frames < self.block_frames:
        raise UserError(f"{self.path}: too short: {self.num_frames} frames at {self.fps:g} fps, "
                        f"fewer than one {self.block_frames}-frame segment")
      if len(buffer) == self.block_frames:
        yield Block(_stack(buffer), None)
    finally:
      self.decoded_frames, self.warning = decoding.decoded_frames, decoding.warning
