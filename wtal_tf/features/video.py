"""Decoding a video file into RGB frames at 25 fps, as FFmpeg's command line does by
default, streamed in fixed-size blocks, all of them or one chunk of blocks (by seeking).

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

Chunks: `Blocks(path, B, start_block=s, num_blocks=n)` yields blocks s .. s+n-1
only, bit-identical to the same blocks of a whole-video pass. It reads t_0 by
decoding the first frame, seeks (container.seek, backward, key frames only) to
the key frame at or before the chunk's first time t_{sB}, drops decoded
frames until the first key frame, and checks that key frame is at or before
t_{sB}; if the seek landed later (MPEG-TS and other index-less containers),
it seeks again 1, 2, 4, ... s earlier, and decodes from the start when that
reaches t_0 or the container cannot seek. This assumes, as every camera and
encoder writes, timestamps that increase in presentation order and key frames
from which the following frames decode exactly (IDR/closed-GOP or intra-only;
an open GOP's leading pictures, which precede their key frame, are dropped).
`probe` estimates the number of frames from the header without decoding, for
planning chunks (`plan_chunks`); the exact count is `Blocks.total_frames` of
the chunk that reaches the end.
"""

import fractions
import logging
import math
import os
from typing import Iterator, NamedTuple, Optional, Sequence

import av
import numpy as np

from wtal_tf.contract import FPS as TARGET_FPS  # frames/s of the decoded output
from wtal_tf.errors import UserError

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
DEFAULT_STREAM_BONUS = 5_000_000  # ffmpeg's map_auto_video: added to width x height of the
# stream with the "default" disposition
DISPLAY_MATRIX_ONE = 65536.0  # 1.0 in a display matrix's 16.16 fixed-point entries
ANGLE_TOLERANCE_DEG = 1.0  # a display rotation within this of a right angle is that angle
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
  """(the absolute paths of the video files directly in `video_dir`, sorted; the names of
  the other entries, sorted).

  A video file is a regular file (or a link to one) whose name ends with one of
  VIDEO_EXTENSIONS in any letter case and does not start with "." (hidden
  files, e.g. macOS's "._clip.mp4", are ignored). A link of such a name whose
  target is missing (an unmounted disk, a git-annex file not fetched) is listed
  too, so that the run reports it as failed. Everything else in the directory
  (other names, hidden files, subdirectories) is returned as ignored.
  UserError if the directory is missing, holds no video, or two videos have the
  same name without extension (they would write the same feature file).
  """
  if not video_dir or not os.path.isdir(video_dir):
    raise UserError(f"{video_dir or '--video_dir'}: video directory not found")
  paths, ignored, folder = [], [], os.path.abspath(video_dir)  # (absolute: a worker's
  # folder is not the driver's)
  for entry in sorted(os.listdir(folder)):
    path = os.path.join(folder, entry)
    if is_video_name(entry) and (os.path.isfile(path) or not os.path.exists(path)):
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


class Unreachable(UserError):
  """A video this process cannot read at all (not there, not permitted, an I/O error),
  which says nothing of its content: extract keeps the features made of it before."""


def _open(path: str):
  try:
    return av.open(path)
  except FileNotFoundError:  # (listed before: list_videos)
    raise Unreachable(f"{path}: cannot read as a video (not found, though listed: on a "
                      "cluster, every worker must see --video_dir at this same path)") from None
  except OSError as e:  # (PyAV's errors of the system: EACCES, EIO, ESTALE, ...)
    raise Unreachable(f"{path}: cannot read as a video ({_reason(e)})") from None
  except (av.FFmpegError, UnicodeDecodeError) as e:  # (its content: not a video, corrupt)
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
    score = ((getattr(ctx, "width", 0) or 0) * (getattr(ctx, "height", 0) or 0)
             + DEFAULT_STREAM_BONUS * bool(s.disposition & av.stream.Disposition.default))
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
  m = [v / DISPLAY_MATRIX_ONE for v in matrix[:6]]
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
  if abs(theta - 90) < ANGLE_TOLERANCE_DEG:
    out = image.transpose(1, 0, 2) if matrix[3] > 0 else np.rot90(image, -1)  # cclock_flip / clock
  elif abs(theta - 180) < ANGLE_TOLERANCE_DEG:
    out = image
    if matrix[0] < 0:
      out = out[:, ::-1]  # hflip
    if matrix[4] < 0:
      out = out[::-1]  # vflip
  elif abs(theta - 270) < ANGLE_TOLERANCE_DEG:
    out = np.rot90(image, -1)[::-1] if matrix[3] < 0 else np.rot90(image, 1)  # clock_flip / cclock
  elif abs(theta) < ANGLE_TOLERANCE_DEG and matrix[4] < 0:
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

  def timed(self, frames: Iterator, period: fractions.Fraction, after_seek: bool = False):
    """(time in s, duration in s, frame) of `frames`; time None for a frame that has no
    timestamp and follows nothing (only after a seek; from the start it is 0)."""
    default_duration = self.frame_duration or period
    previous_time = previous_duration = None
    try:
      for frame in frames:
        if frame.pts is not None:
          time = frame.pts * self.time_base
        elif previous_time is not None:
          time = previous_time + previous_duration
        else:
          time = None if after_seek else fractions.Fraction(0)
        duration = (frame.duration * self.time_base) if frame.duration else default_duration
        yield time, duration, frame
        if time is not None:
          previous_time, previous_duration = time, duration
    finally:
      frames.close()


def _prepend(first, rest: Iterator) -> Iterator:
  """`first`, then the items of the generator `rest` (closed with this one)."""
  try:
    yield first
    yield from rest
  finally:
    rest.close()


class _Decoding:
  """Output frames k of one iteration over a video, and what the iteration found out."""

  def __init__(self, path: str, fps: float):
    self.path, self.fps = path, fps
    self.period = fractions.Fraction(fps).limit_denominator(1_000_000) ** -1
    self.decoded_frames = 0  # frames the decoder produced (includes the look-ups and skipped ones)
    self.total_frames = None  # frames of the whole video at fps, once the end was reached
    self.seeks = 0  # seeks made to reach the chunk
    self.from_start = True  # whether the frames came from decoding from the start
    self.warning = None
    self._odd_angles = set()

  def _image(self, held: list) -> np.ndarray:
    if held[1] is None:
      frame = held[0]
      matrix = _frame_matrix(frame)
      if matrix is not None:
        theta = display_rotation(matrix)
        if not math.isnan(theta) and min(
            abs(theta - a) for a in (0, 90, 180, 270, 360)) >= ANGLE_TOLERANCE_DEG:
          self._odd_angles.add(round(theta, 1))
      held[1] = orient(frame.to_ndarray(format="rgb24"), matrix)
      held[0] = None
    return held[1]

  def origin(self) -> Optional[fractions.Fraction]:
    """t_0: the time of the first frame a decode from the start yields (None: no frame)."""
    video = _Video(self.path)
    try:
      timed = video.timed(video.packets_and_frames(), self.period)
      first = next(timed, None)
      timed.close()
      return None if first is None else first[0]
    finally:
      self.decoded_frames += video.decoded
      video.close()

  def _seek(self, video: _Video, want: fractions.Fraction, origin: fractions.Fraction):
    """Timed frames from a key frame at or before time `want`, by seeking; None if seeking
    cannot get there before reaching t_0 (then the caller decodes from the start)."""
    back = fractions.Fraction(0)
    while want - back > origin:
      target = math.floor((want - back) / video.time_base)
      try:
        video.container.seek(target, backward=True, any_frame=False, stream=video.stream)
      except (av.FFmpegError, OSError):
        return None  # not seekable
      self.seeks += 1
      timed = video.timed(video.packets_and_frames(), self.period, after_seek=True)
      for item in timed:
        time, _, frame = item
        if time is None:
          break  # cannot place frames without timestamps: try earlier
        if frame.key_frame:
          if time <= want:
            return _prepend(item, timed)
          break
      timed.close()
      back = max(2 * back, fractions.Fraction(1))
    return None

  def output(self, start: int = 0, stop: Optional[int] = None) -> Iterator[np.ndarray]:
    """Output frames start .. stop - 1 (to the end if stop is None), uint8 [H, W, 3] RGB."""
    period = self.period
    origin = self.origin() if start > 0 else None
    video = _Video(self.path)
    try:
      timed = None
      if start > 0 and origin is not None:
        timed = self._seek(video, origin + start * period, origin)
        if timed is None and self.seeks:
          video.close()
          video = _Video(self.path)  # a fresh decoder, exactly as a whole-video pass
        self.from_start = timed is None
      if timed is None:
        timed = video.timed(video.packets_and_frames(), period)
      yield from self._resample(video, timed, origin, start, stop)
    finally:
      self.decoded_frames += video.decoded
      video.close()

  def _resample(self, video: _Video, timed: Iterator, origin: Optional[fractions.Fraction],
                k: int, stop: Optional[int]) -> Iterator[np.ndarray]:
    """The nearest-previous rule over `timed`, from output frame k (its source frame is
    among the first of `timed`) to stop - 1."""
    period, held = self.period, None  # held: [frame, its image] of the last decoded frame
    last_time = last_duration = None
    if stop is not None and k >= stop:
      return
    for time, duration, frame in timed:  # every time is set: see _seek and timed
      if origin is None:
        origin = time
      if held is not None:
        while origin + k * period < time:
          yield self._image(held)
          k += 1
          if stop is not None and k >= stop:
            timed.close()
            self._report(video, None)
            return
      held, last_time, last_duration = [frame, None], time, duration
    if held is None:
      self._fail(video)
    end = last_time + last_duration
    while origin + k * period < end:
      yield self._image(held)
      k += 1
      if stop is not None and k >= stop:
        self._report(video, None)
        return
    # the number of k with t_k < end (k itself unless the chunk starts after the end)
    self.total_frames = max(0, math.ceil((end - origin) / period))
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
    """Sets and logs the warning if anything was wrong; `decoded_duration` (from the stream's
    start to the end of its last frame) only when the iteration reached the end."""
    problems = []
    declared = video.declared_duration()
    if (decoded_duration is not None and declared is not None and decoded_duration
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
      frames = ("" if self.total_frames is None
                else f", {self.total_frames} at {self.fps:g} fps")
      self.warning = (f"{self.path}: {'; '.join(problems)}; decoded {video.decoded} "
                      f"frames{frames}")
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

  Block b holds output frames b*block_frames ... (b+1)*block_frames - 1. With
  the defaults, iterating decodes the whole video once and yields every
  complete block (the last frames, fewer than block_frames, are dropped). With
  `start_block`/`num_blocks` it yields only blocks start_block ...
  start_block + num_blocks - 1 (num_blocks None: to the end) that exist, by
  seeking (module docstring), bit-identical to the same blocks of a
  whole-video pass; the next frame of a chunk's last block is the first frame
  of the next chunk (None at the end of the video).

  A video with fewer than block_frames frames is a UserError naming the file
  (raised at the end of an iteration that starts at block 0). After the
  iteration:
    num_frames      frames at `fps` from the chunk's first frame up to the next
                    chunk's (the whole video: all its frames); the chunks of a
                    video add up to its frame count
    total_frames    the whole video's frame count at `fps` if this iteration
                    reached the end of the video, else None
    decoded_frames  frames the decoder produced (the cost of the iteration)
    from_start      False if the chunk was reached by seeking
    warning         None, or the one-line warning logged for a damaged file
  """

  def __init__(self, path: str, block_frames: int, fps: float = TARGET_FPS,
               start_block: int = 0, num_blocks: Optional[int] = None):
    if block_frames < 1 or start_block < 0 or (num_blocks is not None and num_blocks < 0):
      raise ValueError(f"bad block range: block_frames={block_frames}, "
                       f"start_block={start_block}, num_blocks={num_blocks}")
    self.path, self.block_frames, self.fps = path, block_frames, fps
    self.start_block, self.num_blocks = start_block, num_blocks
    self.num_frames = self.decoded_frames = 0
    self.total_frames = self.warning = None
    self.from_start = True

  def __iter__(self) -> Iterator[Block]:
    size = self.block_frames
    start = self.start_block * size
    end_block = None if self.num_blocks is None else self.start_block + self.num_blocks
    stop = None if end_block is None else end_block * size + 1  # + the next frame
    decoding = _Decoding(self.path, self.fps)
    buffer, block, self.num_frames, self.total_frames = [], self.start_block, 0, None
    try:
      if end_block is not None and end_block <= self.start_block:
        return
      for k, frame in enumerate(decoding.output(start, stop), start):
        if stop is None or k < stop - 1:  # not the next chunk's first frame
          self.num_frames += 1
        if len(buffer) == size:
          yield Block(_stack(buffer), frame)
          buffer, block = [], block + 1
        buffer.append(frame)
      self.total_frames = decoding.total_frames
      if self.total_frames is not None:
        if self.start_block == 0 and self.total_frames < size:
          raise UserError(f"{self.path}: too short: {self.total_frames} frames at {self.fps:g} "
                          f"fps, fewer than one {size}-frame segment")
        if len(buffer) == size and (end_block is None or block < end_block):
          yield Block(_stack(buffer), None)
    finally:
      self.decoded_frames, self.from_start = decoding.decoded_frames, decoding.from_start
      self.warning = decoding.warning


class Probe(NamedTuple):
  """What a video's header says about its video stream, read without decoding."""
  start_time: Optional[float]  # seconds: the stream's first timestamp as the header gives it
  duration: Optional[float]  # seconds the header declares for the video stream (else the file)
  estimated_frames: Optional[int]  # frames at fps that duration implies: an ESTIMATE


def probe(path: str, fps: float = TARGET_FPS) -> Probe:
  """The header's view of `path`, for planning chunks without decoding it.

  `estimated_frames` = ceil(duration x fps), with the duration the video
  stream's header declares (else the file's, which FFmpeg may itself have
  estimated from the bit rate). It is an estimate: exact for ordinary
  constant-rate files, but a header can be wrong, a file may declare no
  duration (then None) and a damaged one decodes fewer frames. The exact count
  is `Blocks.total_frames` once a pass reaches the end of the video.
  """
  video = _Video(path)
  try:
    declared = video.declared_duration(whole_file=True)
    period = fractions.Fraction(fps).limit_denominator(1_000_000) ** -1
    start = video.stream.start_time
    return Probe(None if start is None else float(start * video.time_base),
                 None if declared is None else float(declared),
                 None if declared is None else math.ceil(declared / period))
  finally:
    video.close()


def estimated_blocks(path: str, block_frames: int, fps: float = TARGET_FPS) -> Optional[int]:
  """floor(probe(path, fps).estimated_frames / block_frames): an ESTIMATE (see probe)."""
  estimated = probe(path, fps).estimated_frames
  return None if estimated is None else estimated // block_frames


def plan_chunks(estimated_num_blocks: Optional[int], blocks_per_chunk: int,
                workers: int = 1) -> list[tuple[int, Optional[int]]]:
  """(start_block, num_blocks) of chunks covering a video of about `estimated_num_blocks`
  blocks; the last chunk is open-ended (num_blocks None), so an estimate that is
  too low loses nothing and one that is too high only adds chunks that yield nothing.

  A video of more than one chunk is cut into chunks of one size, at most
  `blocks_per_chunk` blocks (the last one shorter by the rounding), their number
  rounded up to a multiple of `workers` where the blocks allow: `workers`
  workers then finish the video together, instead of one of them extracting
  an odd chunk last while the others wait.
  """
  if blocks_per_chunk < 1 or workers < 1:
    raise ValueError(f"blocks_per_chunk ({blocks_per_chunk}) and workers ({workers}) "
                     "must be >= 1")
  estimate = estimated_num_blocks or 0
  count = max(1, math.ceil(estimate / blocks_per_chunk))
  size = blocks_per_chunk
  if count > 1:
    size = math.ceil(estimate / (math.ceil(count / workers) * workers))
    count = math.ceil(estimate / size)
  return [(i * size, size if i < count - 1 else None) for i in range(count)]
