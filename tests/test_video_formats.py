"""Videos as people have them, decoded as FFmpeg's command line does by default, and
chunked decoding: tiny generated files (64x48, a few seconds) in every container
list_videos takes, rotated, with a cover picture, changing size, variable frame
rate, late start times, 10-bit and gray pixels, cut short or damaged; and chunks
of blocks that reassemble bit-exactly to a whole-video pass."""

import fractions
import math
import re
import logging

import av
import numpy as np
import pytest

from video_helpers import (PORTRAIT_MATRIX, concatenate, index_frames, set_tkhd_matrix,
                           smooth_frames, truncate, write_video, write_video_with_cover)
from wtal_tf.errors import UserError
from wtal_tf.features import video

F = fractions.Fraction
U = 1 << 16  # 1.0 in a display matrix's 16.16 fixed point
LOSSLESS_H264 = {"qp": "0"}  # libx264, with pix_fmt yuv444p: lossless up to RGB<->YUV rounding


def decode(path, **kw):
  return np.stack(list(video.frames(str(path), **kw)))


def flat_frames(n, step=10, height=48, width=64):
  """Frames whose every pixel is step * index: a lossy codec keeps the index readable."""
  assert (n - 1) * step <= 255
  return np.broadcast_to((np.arange(n) * step).astype(np.uint8)[:, None, None, None],
                         (n, height, width, 3)).copy()


def indices(images, step=10):
  return [int(round(float(np.mean(f)) / step)) for f in images]


# ---------------------------------------------------------------- list_videos


def test_list_videos_takes_every_camera_extension_in_any_case_and_counts_the_rest(tmp_path):
  names = ["A.MP4", "b.Mov", "c.mkv", "d.WEBM", "e.avi", "f.mpg", "g.MPEG", "h.ts", "i.MTS",
           "j.m2ts", "k.3gp", "l.flv", "m.WMV", "n.ogv", "o.m4v"]
  for n in names:
    (tmp_path / n).write_bytes(b"x")
  others = [".hidden.mp4", "._A.mp4", "notes.txt", "p.mp4.part", "q.jpg"]
  for n in others:
    (tmp_path / n).write_bytes(b"x")
  (tmp_path / "sub.mp4").mkdir()  # a directory is not a video file
  (tmp_path / "r.mp4").symlink_to(tmp_path / "unmounted.mp4")  # listed, to fail by name
  (tmp_path / "s.txt").symlink_to(tmp_path / "unmounted.txt")
  paths, ignored = video.list_videos(str(tmp_path))
  assert paths == [str(tmp_path / n) for n in sorted(names + ["r.mp4"])]
  assert ignored == sorted(others + ["sub.mp4", "s.txt"])


def test_list_videos_errors(tmp_path):
  with pytest.raises(UserError, match="video directory not found"):
    video.list_videos(str(tmp_path / "missing"))
  (tmp_path / "readme.txt").write_bytes(b"x")
  (tmp_path / ".x.mp4").write_bytes(b"x")
  with pytest.raises(UserError, match=r"no video files \(2 other entries ignored"):
    video.list_videos(str(tmp_path))
  (tmp_path / "clip.mp4").write_bytes(b"x")
  (tmp_path / "clip.MOV").write_bytes(b"x")
  with pytest.raises(UserError, match="clip.MOV and clip.mp4 would write the same feature file"):
    video.list_videos(str(tmp_path))


# ---------------------------------------------------------------- containers

# extension -> (muxer, codec, pix_fmt, codec options, muxer options, frame size)
CONTAINERS = {
    ".mp4": ("mp4", "libx264", "yuv420p", {}, {}, None),
    ".m4v": ("ipod", "libx264", "yuv420p", {}, {}, None),  # iTunes/iPhone .m4v is MP4
    ".mov": ("mov", "libx264", "yuv420p", {}, {}, None),
    ".qt": ("mov", "mjpeg", "yuvj420p", {}, {}, None),
    ".3gp": ("3gp", "mpeg4", "yuv420p", {}, {}, None),
    ".3g2": ("3g2", "mpeg4", "yuv420p", {}, {}, None),
    ".f4v": ("f4v", "libx264", "yuv420p", {}, {}, None),
    ".mkv": ("matroska", "ffv1", "bgr0", {}, {}, None),
    ".webm": ("webm", "libvpx-vp9", "yuv420p", {}, {}, None),
    ".avi": ("avi", "mpeg4", "yuv420p", {}, {}, None),
    ".divx": ("avi", "mpeg4", "yuv420p", {}, {}, None),
    ".mpg": ("mpeg", "mpeg1video", "yuv420p", {}, {}, None),
    ".mpeg": ("mpeg", "mpeg2video", "yuv420p", {}, {}, None),
    ".vob": ("vob", "mpeg2video", "yuv420p", {}, {}, None),
    ".mod": ("vob", "mpeg2video", "yuv420p", {}, {}, None),  # SD camcorders: MPEG-PS
    ".ts": ("mpegts", "libx264", "yuv420p", {}, {}, None),
    ".mts": ("mpegts", "libx264", "yuv420p", {}, {"mpegts_m2ts_mode": "1"}, None),  # AVCHD
    ".m2ts": ("mpegts", "libx264", "yuv420p", {}, {"mpegts_m2ts_mode": "1"}, None),
    ".m2t": ("mpegts", "mpeg2video", "yuv420p", {}, {}, None),  # HDV
    ".tod": ("mpegts", "mpeg2video", "yuv420p", {}, {}, None),  # HD camcorders: MPEG-TS
    ".flv": ("flv", "flv", "yuv420p", {}, {}, None),
    ".wmv": ("asf", "wmv2", "yuv420p", {}, {}, None),
    ".asf": ("asf", "msmpeg4", "yuv420p", {}, {}, None),
    ".ogv": ("ogg", "libvpx", "yuv420p", {}, {}, None),  # no Theora encoder here: VP8 in Ogg
    ".dv": ("dv", "dvvideo", "yuv411p", {}, {}, (480, 720)),  # DV is 720x480 at 29.97 fps
    ".mxf": ("mxf", "mpeg2video", "yuv422p", {}, {}, (576, 720)),
}


def test_the_container_table_covers_every_listed_extension():
  assert sorted(CONTAINERS) == sorted(video.VIDEO_EXTENSIONS)
  assert {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
          ".m2ts", ".3gp", ".flv", ".wmv", ".ogv"} <= set(video.VIDEO_EXTENSIONS)


@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_every_listed_container_decodes_in_order_in_any_letter_case(tmp_path, ext):
  muxer, codec, pix_fmt, options, mux_options, size = CONTAINERS[ext]
  n, fps = 20, 25
  if ext == ".dv":
    n, fps = 10, F(30000, 1001)
  height, width = size or (48, 64)
  path = tmp_path / f"Clip{ext.upper()}"  # as a camera names it
  write_video(path, flat_frames(n, 10, height, width), fps, codec, pix_fmt, format=muxer,
              codec_options=options, container_options=mux_options, bit_rate=4_000_000)
  paths, _ = video.list_videos(str(tmp_path))
  assert paths == [str(path)]
  frames = video.frames(str(path))
  got = list(frames)
  assert got[0].shape == (height, width, 3) and got[0].dtype == np.uint8
  assert indices(got) == reference_indices(str(path))
  if muxer in ("mpeg", "vob"):
    # FFmpeg's MPEG-PS muxer stores one PTS per PES packet; the demuxer's interpolation puts
    # one frame a frame late, so the 25 fps rule shows the frame before it twice.
    assert sorted(set(indices(got))) == list(range(n)) and len(got) <= n + 1
  elif fps == 25:
    assert indices(got) == list(range(n))
  else:  # 29.97 fps: 10 frames (0.334 s) give 9 frames at 25 fps
    assert indices(got) == [int(k * 30000 / 1001 / 25) for k in range(9)]
  assert frames.warning is None  # an intact file is not reported as damaged


def reference_indices(path, step=10):
  """The nearest-previous rule worked out directly from PyAV's frames and timestamps."""
  container = av.open(path)
  stream = container.streams.video[0]
  raw = [(f.pts * stream.time_base, f.duration * stream.time_base,
          int(round(float(np.mean(f.to_ndarray(format="rgb24"))) / step)))
         for f in container.decode(stream)]
  container.close()
  times = [t for t, _, _ in raw]
  end = raw[-1][0] + (raw[-1][1] or 1 / stream.average_rate)
  out, k = [], 0
  while times[0] + F(k, 25) < end:
    out.append(raw[max(i for i, t in enumerate(times) if t <= times[0] + F(k, 25))][2])
    k += 1
  return out


# ---------------------------------------------------------------- stream choice


def test_a_cover_picture_listed_first_is_not_the_video(tmp_path):
  frames = flat_frames(5)
  cover = np.full((128, 128, 3), 250, np.uint8)  # larger than the video, as cover art is
  path = write_video_with_cover(tmp_path / "song.mp4", frames, cover)
  container = av.open(path)
  first, second = container.streams.video
  assert first.disposition & av.stream.Disposition.attached_pic and first.codec_context.width == 128
  assert video.select_stream(container.streams) is second
  container.close()
  got = decode(path)
  assert got.shape == (5, 48, 64, 3)
  assert np.abs(got.astype(int) - frames).max() <= 2


def test_the_largest_video_stream_is_chosen_as_ffmpeg_does(tmp_path):
  # A small preview track first, the real video second (ffmpeg: highest resolution wins).
  path = str(tmp_path / "two.mkv")
  container = av.open(path, "w")
  tracks = []
  for (h, w), value in (((24, 32), 200), ((48, 64), 40)):
    s = container.add_stream("ffv1", rate=25)
    s.height, s.width, s.pix_fmt = h, w, "bgr0"
    tracks.append((s, np.full((h, w, 3), value, np.uint8)))
  for _ in range(3):
    for s, image in tracks:
      for packet in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
        container.mux(packet)
  for s, _ in tracks:
    for packet in s.encode():
      container.mux(packet)
  container.close()
  got = decode(path)
  assert got.shape == (3, 48, 64, 3) and (got == 40).all()


def test_a_file_with_only_a_cover_has_no_video_stream():
  class Stream:  # select_stream reads type, disposition and the codec's size
    def __init__(self, kind, disposition, width, height):
      self.type, self.disposition = kind, disposition
      self.codec_context = type("C", (), {"width": width, "height": height})()
  cover = Stream("video", av.stream.Disposition.attached_pic, 600, 600)
  audio = Stream("audio", av.stream.Disposition.default, 0, 0)
  assert video.select_stream([audio, cover]) is None
  small_default = Stream("video", av.stream.Disposition.default, 320, 240)
  large = Stream("video", av.stream.Disposition(0), 640, 480)
  larger = Stream("video", av.stream.Disposition(0), 4000, 3000)
  assert video.select_stream([cover, small_default, large]) is small_default  # +5,000,000
  assert video.select_stream([cover, small_default, larger]) is larger


# ---------------------------------------------------------------- orientation


def quicktime_transform(image, matrix):
  """Where the display matrix sends each stored pixel (x, y) -> (a x + c y, b x + d y),
  shifted into place: the meaning of the MP4/MOV matrix, independent of ffmpeg's filters."""
  a, b, c, d = (matrix[i] / U for i in (0, 1, 3, 4))
  h, w = image.shape[:2]
  ys, xs = np.mgrid[0:h, 0:w] + 0.5
  px, py = a * xs + c * ys, b * xs + d * ys
  px, py = px - px.min(), py - py.min()
  out = np.zeros((int(round(py.max())) + 1, int(round(px.max())) + 1) + image.shape[2:],
                 image.dtype)
  out[py.round().astype(int), px.round().astype(int)] = image
  return out


ASYMMETRIC = np.zeros((3, 48, 64, 3), np.uint8)
ASYMMETRIC[:, :12, :20] = (250, 0, 0)  # red block at the top left
ASYMMETRIC[:, -10:, 30:] = (0, 0, 250)  # blue band at the bottom right
ASYMMETRIC[:, :, :4, 1] = 200  # green stripe down the left edge


@pytest.mark.parametrize("degrees", [90, 180, 270, -90])
@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".mov"])
def test_display_rotation_is_applied_to_every_frame(tmp_path, ext, degrees):
  codec, pix_fmt, options = (("ffv1", "bgr0", None) if ext == ".mkv"
                             else ("libx264", "yuv444p", LOSSLESS_H264))
  plain = decode(write_video(tmp_path / f"plain{ext}", ASYMMETRIC, 25, codec, pix_fmt,
                             codec_options=options))
  path = write_video(tmp_path / f"r{ext}", ASYMMETRIC, 25, codec, pix_fmt, rotation=degrees,
                     codec_options=options)
  container = av.open(path)
  frame = next(container.decode(video=0))
  assert frame.rotation == (degrees + 180) % 360 - 180 or abs(frame.rotation) == 180 == abs(degrees)
  container.close()
  got = decode(path)
  assert np.array_equal(got, np.stack([np.rot90(f, degrees // 90) for f in plain]))  # ccw
  assert got.shape[1:3] == ((64, 48) if degrees % 180 else (48, 64))


@pytest.mark.parametrize("matrix", [
    PORTRAIT_MATRIX,  # rotate 90 cw (a phone held upright): transpose=clock
    (0, U, 0, U, 0, 0, 0, 0, 1 << 30),  # 90 + mirror: transpose=cclock_flip
    (-U, 0, 0, 0, -U, 0, 0, 0, 1 << 30),  # 180: hflip + vflip
    (-U, 0, 0, 0, U, 0, 0, 0, 1 << 30),  # mirror (front camera): hflip
    (0, -U, 0, U, 0, 0, 0, 0, 1 << 30),  # rotate 90 ccw: transpose=cclock
    (0, -U, 0, -U, 0, 0, 0, 0, 1 << 30),  # 270 + mirror: transpose=clock_flip
    (U, 0, 0, 0, -U, 0, 0, 0, 1 << 30),  # upside-down mirror: vflip
], ids=["cw90", "cw90-flip", "180", "hflip", "ccw90", "ccw90-flip", "vflip"])
def test_an_mp4_track_matrix_as_cameras_write_it_is_applied(tmp_path, matrix):
  plain_path = write_video(tmp_path / "plain.mp4", ASYMMETRIC, 25, "libx264", "yuv444p",
                           codec_options=LOSSLESS_H264)
  plain = decode(plain_path)
  path = set_tkhd_matrix(write_video(tmp_path / "phone.mp4", ASYMMETRIC, 25, "libx264",
                                     "yuv444p", codec_options=LOSSLESS_H264), matrix)
  got = decode(path)
  assert np.array_equal(got, np.stack([quicktime_transform(f, matrix) for f in plain]))


def test_the_portrait_matrix_turns_the_picture_clockwise(tmp_path):
  path = set_tkhd_matrix(write_video(tmp_path / "phone.mp4", ASYMMETRIC, 25, "libx264",
                                     "yuv444p", codec_options=LOSSLESS_H264), PORTRAIT_MATRIX)
  frame = decode(path)[0]
  assert frame.shape == (64, 48, 3)
  assert frame[2, -2, 0] > 200 and frame[-2, 2, 0] < 50  # red: top left -> top right
  assert frame[2, 2, 1] > 150 and frame[2, 2, 0] < 50  # green left edge -> top edge
  assert video.display_rotation(PORTRAIT_MATRIX) == 90  # ffmpeg prints "rotation of -90.00"


def test_rotation_comes_before_the_blocks_the_preprocessing_sees(tmp_path):
  path = set_tkhd_matrix(write_video(tmp_path / "phone.mp4", np.repeat(ASYMMETRIC, 6, 0), 25,
                                     "libx264", "yuv444p", codec_options=LOSSLESS_H264),
                         PORTRAIT_MATRIX)
  blocks = list(video.Blocks(path, 16))
  assert len(blocks) == 1 and blocks[0].frames.shape == (16, 64, 48, 3)
  assert blocks[0].next_frame.shape == (64, 48, 3)


# ---------------------------------------------------------------- size, timing


def test_a_frame_size_change_midway_yields_every_frame_at_its_own_size(tmp_path):
  first = write_video(tmp_path / "a.ts", flat_frames(20), 25, "libx264", "yuv444p",
                      codec_options=LOSSLESS_H264)
  second = write_video(tmp_path / "b.ts", flat_frames(20, 10, 64, 48)[::-1].copy(), 25,
                       "libx264", "yuv444p", codec_options=LOSSLESS_H264,
                       pts=range(20, 40), time_base=F(1, 25))
  path = concatenate([first, second], tmp_path / "both.ts")  # as a broadcast capture
  got = list(video.frames(path))
  assert [f.shape for f in got] == [(48, 64, 3)] * 20 + [(64, 48, 3)] * 20
  assert indices(got) == list(range(20)) + list(range(19, -1, -1))
  blocks = list(video.Blocks(path, 16))
  assert isinstance(blocks[0].frames, np.ndarray) and blocks[0].frames.shape == (16, 48, 64, 3)
  mixed = blocks[1].frames  # frames 16..31: the size changes at 20
  assert isinstance(mixed, list)
  assert [f.shape for f in mixed] == [(48, 64, 3)] * 4 + [(64, 48, 3)] * 12


VFR_PTS_MS = [0, 15, 30, 95, 100, 210, 215, 290]  # irregular gaps, as a phone writes
# t_k = 40k ms; the last frame with pts <= t_k; the last frame lasts 40 ms (to 330 ms)
VFR_EXPECTED = [0, 2, 2, 4, 4, 4, 6, 6, 7]


@pytest.mark.parametrize("ext, codec, pix_fmt, options", [
    (".mkv", "ffv1", "bgr0", None), (".mp4", "libx264", "yuv444p", LOSSLESS_H264)])
def test_variable_frame_rate_is_resampled_by_presentation_time(tmp_path, ext, codec, pix_fmt,
                                                               options):
  path = write_video(tmp_path / f"vfr{ext}", flat_frames(8), 25, codec, pix_fmt,
                     pts=VFR_PTS_MS, time_base=F(1, 1000), codec_options=options)
  container = av.open(path)
  stream = container.streams.video[0]
  times = [f.pts * stream.time_base for f in container.decode(stream)]
  container.close()
  assert times == [F(t, 1000) for t in VFR_PTS_MS]
  assert indices(video.frames(path)) == VFR_EXPECTED


@pytest.mark.parametrize("ext, codec, pix_fmt, options", [
    (".mkv", "ffv1", "bgr0", None), (".mp4", "libx264", "yuv444p", LOSSLESS_H264),
    (".ts", "libx264", "yuv444p", LOSSLESS_H264)])
def test_a_video_starting_at_10_s_starts_at_output_frame_0(tmp_path, ext, codec, pix_fmt, options):
  path = write_video(tmp_path / f"late{ext}", flat_frames(30, 8), 25, codec, pix_fmt,
                     pts=range(250, 280), time_base=F(1, 25), codec_options=options)
  frames = video.frames(path)
  assert indices(frames, 8) == list(range(30))
  assert frames.warning is None  # Matroska's durations from 0 are not taken for a cut
  info = video.probe(path)
  assert info.start_time == pytest.approx(10.0) and info.estimated_frames == 30
  # t_0 (the first decoded frame) and the header's start time agree
  assert video._Decoding(path, 25.0).origin() == F(10)
  blocks = video.Blocks(path, 16)
  assert len(list(blocks)) == 1 and blocks.total_frames == 30


# ---------------------------------------------------------------- pixel formats


def ramps(n, height=48, width=64):
  """Colour ramps (smooth, as a camera's picture): 4:2:0 chroma loses little of them."""
  y, x = np.mgrid[0:height, 0:width]
  return np.stack([np.stack([40 + 2 * x + k, 30 + 3 * y, 220 - x - 2 * y + k], -1)
                   for k in range(n)]).clip(0, 255).astype(np.uint8)


def close_to(got, source):
  """Within the rounding of 8-bit 4:2:0 YUV (measured: max 6, mean 1.6 for these ramps);
  a wrong bit depth, range or matrix is off by tens."""
  error = np.abs(got.astype(int) - source)
  return error.max() <= 8 and error.mean() <= 2


@pytest.mark.parametrize("codec, pix_fmt, options", [
    ("ffv1", "yuv420p10le", None), ("libx264", "yuv420p10le", {"qp": "0"}),
    ("libx265", "yuv420p10le", {"x265-params": "lossless=1:log-level=error"}),
    ("ffv1", "yuv444p10le", None), ("ffv1", "yuv444p12le", None)])
def test_high_bit_depth_video_converts_to_8_bit_rgb(tmp_path, codec, pix_fmt, options):
  source = ramps(3)
  eight_bit = decode(write_video(tmp_path / "y8.mkv", source, 25, "ffv1", "yuv420p"))
  path = write_video(tmp_path / "y10.mkv", source, 25, codec, pix_fmt, codec_options=options)
  container = av.open(path)
  assert next(container.decode(video=0)).format.name == pix_fmt
  container.close()
  got = decode(path)
  assert got.dtype == np.uint8 and got.shape == source.shape
  assert close_to(eight_bit, source) and close_to(got, source)
  if "444" in pix_fmt:  # no chroma subsampling: 10/12-bit YUV holds 8-bit RGB exactly
    assert np.array_equal(got, source)
  else:  # the finer chroma steps of 10 bits are no worse than 8 bits (measured 1.37-1.43
    # against 1.56 mean error)
    assert float(np.abs(got.astype(int) - source).mean()) <= float(
        np.abs(eight_bit.astype(int) - source).mean()) + 0.05


def test_gray_video_converts_to_rgb(tmp_path):
  gray = smooth_frames(3)[..., 1]
  got = decode(write_video(tmp_path / "g8.mkv", gray, 25, "ffv1", "gray"))
  assert np.array_equal(got, np.repeat(gray[..., None], 3, -1))  # gray is full range: exact
  deep = gray.astype(np.uint16) * 256 + 100  # gray16: the 8-bit value in the high byte
  got16 = decode(write_video(tmp_path / "g16.mkv", deep, 25, "ffv1", "gray16le"))
  assert got16.dtype == np.uint8 and np.array_equal(got16[..., 0], got16[..., 2])
  assert np.abs(got16.astype(int) - gray[..., None]).max() <= 1


def test_full_range_yuv_from_phones_keeps_its_levels(tmp_path):
  source = ramps(3)
  path = write_video(tmp_path / "pc.mp4", source, 25, "libx264", "yuvj420p",
                     codec_options=LOSSLESS_H264)
  container = av.open(path)
  assert next(container.decode(video=0)).color_range == 2  # AVCOL_RANGE_JPEG
  container.close()
  assert close_to(decode(path), source)
  assert close_to(decode(write_video(tmp_path / "tv.mp4", source, 25, "libx264", "yuv420p",
                                     codec_options=LOSSLESS_H264)), source)


# ---------------------------------------------------------------- damaged files


def test_a_cut_short_mkv_yields_what_it_holds_and_says_so(tmp_path, caplog):
  source = smooth_frames(100)
  path = write_video(tmp_path / "v.mkv", source, 25)
  whole = video.frames(path)
  complete = np.stack(list(whole))
  assert whole.warning is None
  cut = truncate(path, 0.6, tmp_path / "cut.mkv")
  frames = video.frames(cut)
  with caplog.at_level(logging.WARNING, logger="wtal_tf.features.video"):
    got = np.stack(list(frames))
  assert 50 <= len(got) < 62 and np.array_equal(got, complete[:len(got)])
  assert frames.warning == (f"{cut}: cut short or damaged: its frames end at "
                            f"{len(got) / 25:.2f} s of the 4.00 s its header declares; "
                            f"decoded {len(got)} frames, {len(got)} at 25 fps")
  assert frames.warning in caplog.messages
  blocks = video.Blocks(cut, 16)
  assert len(list(blocks)) == len(got) // 16 and blocks.warning == frames.warning


def test_a_video_gone_since_it_was_listed_names_the_likely_cause(tmp_path):
  """Found by a user: on a cluster, a worker that did not see --video_dir at the
  driver's path said only 'No such file or directory'."""
  gone = tmp_path / "gone.mp4"
  with pytest.raises(UserError, match=re.escape(
      f"{gone}: cannot read as a video (not found, though listed: on a cluster, every "
      "worker must see --video_dir at this same path)")):
    list(video.frames(str(gone)))


def test_a_cut_short_mp4_without_its_index_is_one_line_error(tmp_path):
  path = write_video(tmp_path / "v.mp4", smooth_frames(60), 25, "libx264", "yuv420p")
  cut = truncate(path, 0.6, tmp_path / "cut.mp4")  # the moov box is at the end: lost
  with pytest.raises(UserError, match=f"^{cut}: cannot read as a video "):
    list(video.frames(cut))


def test_a_cut_short_faststart_mp4_yields_what_it_holds(tmp_path):
  # No B-frames: every frame then depends only on frames before it, so only the last
  # frame decoded (the one the cut goes through) may be damaged. With B-frames, frames
  # shown before the cut can depend on a lost one, and which ones varies: libx264's
  # output under load differs from run to run (its threads), and once 4 or more frames
  # before the end differed.
  path = write_video(tmp_path / "v.mp4", smooth_frames(100), 25, "libx264", "yuv420p",
                     codec_options={"bf": "0"}, container_options={"movflags": "faststart"})
  complete = decode(path)
  cut = truncate(path, 0.6, tmp_path / "cut.mp4")
  frames = video.frames(cut)
  got = np.stack(list(frames))
  assert 20 <= len(got) < 70
  assert np.array_equal(got[:-1], complete[:len(got) - 1])  # up to the damaged end
  assert frames.warning.startswith(f"{cut}: cut short or damaged: its frames end at ")


def damage_packets(path, which, out):
  """Overwrites the payload of the packets `which` with random bytes."""
  container = av.open(path)
  stream = container.streams.video[0]
  spots = [(p.pos, p.size) for p in container.demux(stream) if p.size]
  container.close()
  data, rng = bytearray(open(path, "rb").read()), np.random.default_rng(1)
  for i in which:
    pos, size = spots[i]
    data[pos + 8:pos + size] = rng.integers(0, 256, size - 8, dtype=np.uint8).tobytes()
  open(out, "wb").write(data)
  return str(out)


def test_a_packet_that_fails_to_decode_is_skipped_as_ffmpeg_does(tmp_path):
  source = smooth_frames(30)
  path = write_video(tmp_path / "v.avi", source, 25, codec_options={"g": "1"})  # all intra
  bad = damage_packets(path, [10], tmp_path / "bad.avi")
  frames = video.frames(bad)
  got = np.stack(list(frames))
  assert len(got) == 30  # frame 10's slot shows frame 9 (nearest previous)
  assert np.array_equal(got[:10], source[:10]) and np.array_equal(got[10], source[9])
  assert np.array_equal(got[11:], source[11:])
  assert frames.warning.startswith(f"{bad}: 1 packets failed to decode")
  assert frames.decoded_frames == 29


def test_a_video_that_mostly_fails_to_decode_is_an_error(tmp_path):
  path = write_video(tmp_path / "v.avi", smooth_frames(30), 25)
  bad = damage_packets(path, range(5, 30), tmp_path / "bad.avi")
  with pytest.raises(UserError, match=rf"^{bad}: corrupt video, \d+ of \d+ decode attempts failed"):
    list(video.frames(bad))


# ---------------------------------------------------------------- chunks

SPARSE_KEYS = {"g": "50", "keyint_min": "50", "sc_threshold": "0", "bf": "3"}


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
  """240 source frames, libx264 with B-frames and a key frame every 50, per (container, fps)."""
  root = tmp_path_factory.mktemp("chunks")
  source = smooth_frames(240)
  return {(ext, fps): write_video(root / f"v{fps}{ext}", source, fps, "libx264", "yuv420p",
                                  codec_options=SPARSE_KEYS)
          for ext in (".mp4", ".mkv", ".ts") for fps in (30, 25)}


def test_the_chunk_test_videos_have_b_frames_and_sparse_key_frames(long_videos):
  container = av.open(long_videos[".mp4", 30])
  packets = [p for p in container.demux(video=0) if p.size]
  container.close()
  assert sum(p.is_keyframe for p in packets) == 5  # frames 0, 50, 100, 150, 200
  assert any(p.pts > p.dts + 512 for p in packets)  # presentation after decoding: B-frames


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".ts"])
def test_t0_of_the_first_frame_agrees_with_the_header_start_time(long_videos, ext):
  for fps in (30, 25):
    path = long_videos[ext, fps]
    container = av.open(path)
    stream = container.streams.video[0]
    header = stream.start_time * stream.time_base
    container.close()
    assert video._Decoding(path, 25.0).origin() == header
    assert video.probe(path).start_time == pytest.approx(float(header))
    assert (header > 0) == (ext == ".ts")  # MPEG-TS starts at the muxer's offset


def blocks_of(blocks):
  return [(b.frames, b.next_frame) for b in blocks]


def same_blocks(a, b):
  return len(a) == len(b) and all(
      np.array_equal(x[0], y[0]) and (x[1] is None and y[1] is None or
                                      x[1] is not None and y[1] is not None and
                                      np.array_equal(x[1], y[1])) for x, y in zip(a, b))


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".ts"])
@pytest.mark.parametrize("fps", [30, 25])
def test_every_chunking_reassembles_the_whole_pass_bit_exactly(long_videos, ext, fps):
  path = long_videos[ext, fps]
  whole = video.Blocks(path, 16)
  reference = blocks_of(whole)
  total = 200 if fps == 30 else 240  # frames at 25 fps: 8 s or 9.6 s
  assert whole.total_frames == whole.num_frames == total and len(reference) == total // 16
  for per in (1, 2, 3, 7):
    got, frame_count, totals = [], 0, []
    for start in range(0, len(reference) + 2, per):  # and chunks past the end
      chunk = video.Blocks(path, 16, start_block=start, num_blocks=per)
      got += blocks_of(chunk)
      frame_count += chunk.num_frames
      totals.append(chunk.total_frames)
      if start == 0 or ext != ".ts" or start >= 4:  # early MPEG-TS chunks may fall back
        assert chunk.from_start == (start == 0), (ext, fps, per, start)
    assert same_blocks(got, reference), (ext, fps, per)
    assert frame_count == total  # chunks' num_frames add up to the video's
    reached = [t for t in totals if t is not None]
    assert reached and set(reached) == {total}  # known where a chunk reached the end


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".ts"])
def test_a_late_chunk_does_not_decode_from_the_beginning(long_videos, ext):
  path = long_videos[ext, 25]
  chunk = video.Blocks(path, 16, start_block=13, num_blocks=1)  # frames 208..224
  got = blocks_of(chunk)
  reference = blocks_of(video.Blocks(path, 16))[13:14]
  assert same_blocks(got, reference)
  assert not chunk.from_start
  # From the key frame at 200 (and a few frames to find t_0; MPEG-TS seeks land late and
  # are retried earlier), not 225 frames from the start.
  assert chunk.decoded_frames < 100, chunk.decoded_frames


def test_an_mpeg_ts_seek_that_lands_late_is_retried_earlier(long_videos):
  path = long_videos[".ts", 30]
  decoding = video._Decoding(path, 25.0)
  got = list(decoding.output(5 * 16, 6 * 16))
  assert decoding.seeks >= 2 and not decoding.from_start
  whole = list(video.frames(path))
  assert all(np.array_equal(a, b) for a, b in zip(got, whole[80:96])) and len(got) == 16


@pytest.mark.parametrize("ext", [".mkv", ".ts"])
def test_chunks_of_an_open_gop_video(tmp_path, ext):
  # Open GOPs (broadcast, camcorders): B-frames right after a key frame are shown before it
  # and reference the previous GOP; after a seek the decoder drops them.
  options = {"g": "50", "bf": "3",
             "x264-params": "open-gop=1:keyint=50:min-keyint=50:scenecut=0"}
  path = write_video(tmp_path / f"open{ext}", smooth_frames(200), 30, "libx264", "yuv420p",
                     codec_options=options)
  container = av.open(path)
  packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size]
  container.close()
  keys = [i for i, (_, key) in enumerate(packets) if key]
  assert len(keys) >= 3 and any(packets[i + 1][0] < packets[i][0] for i in keys[1:])
  reference = blocks_of(video.Blocks(path, 16))
  for per in (1, 3):
    got = []
    for start in range(0, len(reference) + 1, per):
      got += blocks_of(video.Blocks(path, 16, start_block=start, num_blocks=per))
    assert same_blocks(got, reference), per


def test_chunks_of_a_variable_frame_rate_video_with_b_frames(tmp_path):
  rng = np.random.default_rng(0)
  gaps = rng.choice([20, 33, 40, 50, 70], size=200)
  pts = np.concatenate([[0], np.cumsum(gaps)[:-1]]) + 5000  # starting at 5 s
  path = write_video(tmp_path / "vfr.mp4", smooth_frames(200), 25, "libx264", "yuv420p",
                     pts=pts, time_base=F(1, 1000), codec_options=SPARSE_KEYS)
  reference = blocks_of(video.Blocks(path, 16))
  assert len(reference) >= 10
  got = []
  for start in range(0, len(reference) + 1, 3):
    got += blocks_of(video.Blocks(path, 16, start_block=start, num_blocks=3))
  assert same_blocks(got, reference)


def test_planning_chunks_from_the_header_estimate(long_videos):
  path = long_videos[".mkv", 30]
  info = video.probe(path)
  assert info.duration == pytest.approx(8.0) and info.estimated_frames == 200
  assert video.estimated_blocks(path, 16) == 12
  assert video.plan_chunks(12, 5) == [(0, 4), (4, 4), (8, None)]  # equal, at most 5
  assert video.plan_chunks(None, 5) == [(0, None)]
  # An estimate that is too low loses nothing: the last chunk runs to the end.
  reference = blocks_of(video.Blocks(path, 16))
  got = []
  for start, count in video.plan_chunks(7, 3):
    got += blocks_of(video.Blocks(path, 16, start_block=start, num_blocks=count))
  assert same_blocks(got, reference)


def test_chunks_are_planned_for_the_workers():
  # The bench's long video: 937 segments at most 64 a chunk. One worker: 15 chunks of 63;
  # two workers: 16 of 59 (8 each) instead of 15 (8 and 7).
  assert video.plan_chunks(937, 64) == [(63 * i, 63) for i in range(14)] + [(882, None)]
  assert video.plan_chunks(937, 64, 2) == [(59 * i, 59) for i in range(15)] + [(885, None)]
  assert video.plan_chunks(100, 64, 8) == [(13 * i, 13) for i in range(7)] + [(91, None)]
  assert video.plan_chunks(64, 64, 8) == [(0, None)]  # one chunk: not split for workers
  assert video.plan_chunks(None, 64, 8) == [(0, None)]
  for estimate in range(1, 80):
    for size in (1, 2, 5, 16):
      for workers in (1, 2, 3, 8):
        chunks = video.plan_chunks(estimate, size, workers)
        starts = [s for s, _ in chunks]
        counts = [c for _, c in chunks[:-1]]
        assert chunks[-1][1] is None and starts[0] == 0
        assert all(b - a == c for a, b, c in zip(starts, starts[1:], counts))  # contiguous
        assert len(set(counts)) <= 1 and all(c <= size for c in counts)
        assert starts[-1] < estimate  # the open-ended last chunk has work
        assert estimate - starts[-1] <= (counts[0] if counts else size)
        fewest = math.ceil(estimate / size)
        if fewest > 1:  # split: between the fewest chunks and the next multiple of workers
          target = next(n for n in range(fewest, fewest + workers) if n % workers == 0)
          assert fewest <= len(chunks) <= target
          if estimate % target == 0:  # whole blocks allow equal chunks: exactly that many
            assert len(chunks) == target
        else:
          assert chunks == [(0, None)]
  with pytest.raises(ValueError, match="workers"):
    video.plan_chunks(10, 2, 0)


def test_chunk_edges(tmp_path):
  path = write_video(tmp_path / "v.mkv", index_frames(41), 25)
  assert list(video.Blocks(path, 16, start_block=1, num_blocks=0)) == []
  past = video.Blocks(path, 16, start_block=5, num_blocks=2)
  assert list(past) == [] and past.num_frames == 0 and past.total_frames == 41
  last = video.Blocks(path, 16, start_block=1)
  got = [b.frames[:, 0, 0, 0].tolist() + [int(b.next_frame[0, 0, 0])] for b in last]
  assert got == [[5 * i for i in range(16, 33)]]  # block 1 and frame 32; 33..40 dropped
  assert last.num_frames == 25 and last.total_frames == 41
  short = write_video(tmp_path / "s.mkv", index_frames(10), 25)
  with pytest.raises(UserError, match="too short: 10 frames"):
    list(video.Blocks(short, 16, start_block=0, num_blocks=3))
  assert list(video.Blocks(short, 16, start_block=1)) == []  # only block 0 reports it
  with pytest.raises(ValueError):
    video.Blocks(path, 0)
