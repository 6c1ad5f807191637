"""Frame geometry and value range as kinetics-i3d: resize, centre crop, scale to [-1, 1].

Frames are resized (bilinear, half-pixel centres, computed in float32) so the
shorter side has `shorter` pixels and the aspect ratio is kept (the longer
side rounded to whole pixels), then the centre `crop` x `crop` square is cut
(offset floor((side - crop) / 2)). RGB values 0..255 map linearly to [-1, 1].
The flow stream sees the same geometry, in grayscale (ITU-R BT.601 luma,
rounded to uint8 as TV-L1 expects).
"""

import cv2
import numpy as np

PIXEL_MAX = 255.0  # the largest 8-bit value


def resized_shape(height: int, width: int, shorter: int) -> tuple[int, int]:
  """(height, width) with the shorter side `shorter` and the aspect ratio kept."""
  scale = shorter / min(height, width)
  return ((shorter, max(shorter, round(width * scale))) if height <= width
          else (max(shorter, round(height * scale)), shorter))


def resize_crop(frames, shorter: int, crop: int) -> np.ndarray:
  """uint8 [N, H, W, C] (or N frames of their own sizes) -> float32 [N, crop, crop, C],
  values still 0..255; each frame is resized from its own size."""
  out = np.empty((len(frames), crop, crop) + frames[0].shape[2:], np.float32)
  for i, frame in enumerate(frames):
    h, w = frame.shape[:2]
    out_h, out_w = resized_shape(h, w, shorter)
    top, left = (out_h - crop) // 2, (out_w - crop) // 2
    resized = cv2.resize(frame.astype(np.float32), (out_w, out_h),
                         interpolation=cv2.INTER_LINEAR)
    out[i] = resized.reshape((out_h, out_w) + frame.shape[2:])[top:top + crop,
                                                                left:left + crop]
  return out


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
  """Values 0..255 -> [-1, 1], float32."""
  return (np.asarray(pixels, np.float32) * np.float32(2 / PIXEL_MAX) - 1).astype(np.float32)


def rgb(frames: np.ndarray, shorter: int, crop: int) -> np.ndarray:
  """uint8 RGB [N, H, W, 3] -> the RGB stream's input, float32 [N, crop, crop, 3] in [-1, 1]."""
  return to_unit_range(resize_crop(frames, shorter, crop))


def gray(frames: np.ndarray, shorter: int, crop: int) -> np.ndarray:
  """uint8 RGB [N, H, W, 3] -> grayscale of the same geometry, uint8 [N, crop, crop]."""
  pixels = resize_crop(frames, shorter, crop)
  luma = np.stack([cv2.cvtColor(p, cv2.COLOR_RGB2GRAY) for p in pixels])
  return np.clip(np.rint(luma), 0, PIXEL_MAX).astype(np.uint8)
