"""TV-L1 optical flow as one batched, compiled Keras 3 computation.

The same maths as OpenCV contrib's `cv2.optflow.DualTVL1OpticalFlow_create()`
(modules/optflow/src/tvl1flow.cpp, itself after Sanchez Perez, Meinhardt-Llopis
& Facciolo, "TV-L1 Optical Flow Estimation", IPOL 2013), with its defaults, in
keras.ops only, so it runs under KERAS_BACKEND=tensorflow and =jax. What OpenCV
does, and so what this module does:

* Input: uint8 frames are converted to float32 keeping 0..255; float frames
  are taken to be in [0, 1] and multiplied by 255 (OpenCV's `convertTo` with
  scale 1 or 255). lambda is relative to that 0..255 range.
* Pyramid: level s + 1 is level s resized by `scale_step` (0.8) with bilinear
  interpolation (cv::resize INTER_LINEAR: output size round(size * 0.8),
  source coordinate (x + 0.5) / 0.8 - 0.5 clamped to the image, no
  pre-blur); levels stop before one would be narrower or lower than 16 px.
* Per level, coarsest first; the flow starts at 0 on the coarsest level and
  is carried to the next finer level by bilinear resize to its size
  (coordinate scale = size ratio) times 1 / scale_step. The dual variables p
  restart at 0 on every level.
* Per warp (5 per level): I1 and its centred gradient (central differences,
  half one-sided differences on the borders = replicate border) are sampled
  at x + u with bicubic interpolation (cv::remap INTER_CUBIC, Keys kernel
  a = -0.75, float coordinates, BORDER_CONSTANT 0: taps outside the image
  count as 0); grad = |grad I1w|^2 and rho_c = I1w - grad I1w . u0 - I0.
* Iterations of the warp, in `outer_iterations` (10) rounds of at most
  `inner_iterations` (30): at the start of each round u1 and u2 are median
  filtered (5x5, replicate border, cv::medianBlur); each iteration does
  v = u + TH(rho) (the thresholding step with lambda * theta), u = v + theta
  div p (backward differences, zero before the first row/column), error =
  sum over the image of |u_new - u_old|^2, then p = (p + tau/theta grad u) /
  (1 + tau/theta |grad u|) with forward differences (0 on the last row/column).
  The warp stops as soon as error <= epsilon^2 * H * W (checked after every
  iteration, as OpenCV's CPU path does) or after 10 * 30 iterations.

Compiled computation. `tvl1_flow` calls one compiled function per input shape
[B, H, W], parameters and mode, cached in `_COMPILED`: under TensorFlow a
`tf.function(jit_compile=True)` with that fixed input signature, under JAX a
`jax.jit`; both hand the whole graph to XLA. Inside it the pyramid levels are
unrolled (their shapes differ), the warps are a `keras.ops.fori_loop`, the
rounds and the iterations two nested `keras.ops.while_loop`s: nothing returns
to Python or the host per iteration, warp or level. (Other Keras backends run
the same code uncompiled.) Compiling takes about 11 s (TensorFlow) / 7.5 s
(JAX) per shape on the 2-core machine of bench/bench_tvl1.py.

Two batch modes, both one computation per call:
* "lockstep" (`lockstep_graph`): every op acts on the whole [B, ...] batch.
  Per-pair stopping: every pair keeps its own `error` [B] in the while-loop
  state (reset to FLT_MAX at each warp); an iteration or a median filter is
  computed for the whole batch, but a pair whose error is already
  <= epsilon^2 H W keeps its old u and p (`where(active, new, old)`), so each
  pair follows exactly the steps it would follow alone (tests check the
  flows are bitwise those of each pair alone). The loops end when every pair
  has converged or at the iteration cap, so the batch computes the
  iterations of its slowest pair at each warp. For devices that gain from
  wide ops (GPUs).
* "sequential" (`sequential_graph`): a `keras.ops.fori_loop` over the pairs
  inside the computation runs the one-pair lockstep graph on each; each pair
  stops on its own by construction and the working set is one pair's. The
  default on CPU (`default_mode`): on the 2-core machine it is 4x (TF) /
  1.7x (JAX) faster per pair than lockstep at B = 8.

Memory. The live float32 arrays per pair are, at the finest level: the two
input frames, I1's gradient (2), the stacked I1/I1x/I1y that are warped (3),
I1wx, I1wy, grad, rho_c (4), the loop state u1, u2, p11, p12, p21, p22 (6) and
its next value (6), the coarser pyramid levels (about 1.5 frames each for I0
and I1), plus XLA temporaries (the 16 bicubic taps of the warp, the 25 median
inputs). XLA's buffer assignment (jax `compiled.memory_analysis()`,
arguments + output + temporaries) in lockstep mode is 289 bytes per pixel per
pair ([1, 224, 224] and [8, 224, 224]: 14.5 MB per 224x224 pair);
`BYTES_PER_PIXEL` (320) rounds that up. In sequential mode it is one pair's
14.1 MB plus 16 bytes per pixel per pair (frames in, flow out): 20.5 MB for
[8, 224, 224]. `batch_bytes` estimates a call; `tvl1_flow` splits a batch
whose estimate exceeds `max_batch_bytes` (default 2 GiB) into sub-batches
(`split_batch`), each compiled for its own shape, so a big batch never
needs more than the budget.

Speed (bench/bench_tvl1.py, 32 consecutive 224x224 pairs of bikes.mp4, 2
cores): OpenCV 1.2-1.4 fields/s; this engine 3.5 (TF) / 2.3 (JAX) fields/s
in one call (sequential mode, any B; one call keeps about one core busy) and
5.4-5.6 (TF) / 3.5 (JAX) fields/s with `workers=2` (two calls on two
threads); lockstep 0.46-0.87 (TF) / 0.76-1.34 (JAX) fields/s at B = 32-8.
The iterations are memory-bound elementwise passes (about 2.7x (TF) / 4x
(JAX) the time of their 64 bytes per pixel and iteration at numpy's copy
rate).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import threading

import keras
import numpy as np
from keras import ops

FLT_MAX = float(np.finfo(np.float32).max)  # OpenCV's initial "error" of a warp
FLT_EPSILON = float(np.finfo(np.float32).eps)  # |grad I1w|^2 below this: no data step
MIN_LEVEL_SIZE = 16  # pixels: a pyramid level narrower or lower than this is not used
PIXEL_SCALE_FLOAT = 255.0  # float input is taken to be in [0, 1]: times this (OpenCV)
CUBIC_A = -0.75  # the Keys bicubic kernel parameter of cv::remap INTER_CUBIC
BYTES_PER_PIXEL = 320  # per pair and pixel of the frame: XLA's 289 measured, rounded up
IO_BYTES_PER_PIXEL = 16  # per pair and pixel: two float32 frames in, two flow channels out
DEFAULT_MAX_BATCH_BYTES = 2 << 30  # 2 GiB per call at once: larger batches are split
# Floats read and written by one iteration per pixel (the memory-traffic floor):
# read u1 u2 p11 p12 p21 p22 I1wx I1wy grad rho_c, write u1 u2 p11 p12 p21 p22.
ITERATION_FLOATS_READ, ITERATION_FLOATS_WRITTEN = 10, 6


@dataclasses.dataclass(frozen=True)
class TVL1Params:
  """OpenCV DualTVL1OpticalFlow's parameters, with its defaults."""
  tau: float = 0.25  # time step of the dual (p) update; p moves by tau / theta per iteration
  lambda_: float = 0.15  # weight of the data term against TV; intensities in 0..255
  theta: float = 0.3  # coupling of u (smooth) and v (data): small = tight
  nscales: int = 5  # pyramid levels at most (fewer if a level would be < MIN_LEVEL_SIZE px)
  scale_step: float = 0.8  # zoom factor from one level to the next coarser one
  warps: int = 5  # warpings (re-linearisations of the data term) per level
  epsilon: float = 0.01  # stop a warp when sum |du|^2 <= epsilon^2 * H * W (px^2)
  inner_iterations: int = 30  # iterations per round (a median filter starts each round)
  outer_iterations: int = 10  # rounds per warp at most
  gamma: float = 0.0  # illumination-change term; only 0 (off, the default) is implemented
  median_filtering: int = 5  # median kernel size applied to u each round; <= 1: off
  use_initial_flow: bool = False  # start from a given flow; only False is implemented

  def __post_init__(self):
    if self.gamma != 0:
      raise NotImplementedError("gamma != 0 (illumination term) is not implemented")
    if self.use_initial_flow:
      raise NotImplementedError("use_initial_flow is not implemented")
    if self.median_filtering > 1 and self.median_filtering % 2 == 0:
      raise ValueError(f"median_filtering must be odd, got {self.median_filtering}")
    if self.nscales < 1 or self.warps < 1:
      raise ValueError("nscales and warps must be >= 1")
    if not 0 < self.scale_step < 1:
      raise ValueError(f"scale_step must be in (0, 1), got {self.scale_step}")


# ------------------------------------------------------------ geometry (host)

def _f32(x: float) -> float:
  """x rounded to float32, as a Python float (OpenCV's static_cast<float>)."""
  return float(np.float32(x))


def _cv_round(x: float) -> int:
  """cvRound / saturate_cast<int>(double): nearest, ties to even."""
  return int(round(x))


def pyramid_sizes(height: int, width: int, params: TVL1Params = TVL1Params()):
  """[(h, w)] of the levels, finest first, as OpenCV builds them."""
  sizes = [(height, width)]
  for _ in range(1, params.nscales):
    h, w = sizes[-1]
    h, w = _cv_round(h * params.scale_step), _cv_round(w * params.scale_step)
    if h < MIN_LEVEL_SIZE or w < MIN_LEVEL_SIZE:
      break
    sizes.append((h, w))
  return sizes


def linear_resize_taps(n_in: int, n_out: int, scale: float):
  """cv::resize INTER_LINEAR along one axis: (first tap, second tap, their weights).

  scale: source pixels per output pixel (1 / fx). Output pixel d samples
  source coordinate f = (d + 0.5) * scale - 0.5 (rounded to float32), i.e.
  pixels floor(f) and floor(f) + 1 with weights 1 - frac(f) and frac(f),
  clamped to the first / last pixel. int32 [n_out] x 2, float32 [n_out] x 2.
  """
  first, second = np.zeros(n_out, np.int32), np.zeros(n_out, np.int32)
  w_first, w_second = np.zeros(n_out, np.float32), np.zeros(n_out, np.float32)
  for d in range(n_out):
    f = np.float32((d + 0.5) * scale - 0.5)
    s = math.floor(f)
    f = np.float32(f - np.float32(s))
    if s < 0:
      s, f = 0, np.float32(0)
    if s >= n_in - 1:
      s, f = n_in - 1, np.float32(0)
    first[d], second[d] = s, min(s + 1, n_in - 1)
    w_first[d], w_second[d] = np.float32(1) - f, f
  return first, second, w_first, w_second


# ------------------------------------------------------------ pieces (keras.ops)

def _linear_pass(x, axis, n_out, scale):
  """One axis (1 = rows, 2 = columns) of cv::resize INTER_LINEAR: x[a] w_a + x[b] w_b."""
  first, second, w_first, w_second = linear_resize_taps(x.shape[axis], n_out, scale)
  shape = (1, n_out, 1) if axis == 1 else (1, 1, n_out)
  return (ops.take(x, first, axis=axis) * ops.reshape(w_first, shape)
          + ops.take(x, second, axis=axis) * ops.reshape(w_second, shape))


def resize_bilinear(x, out_size, scale_yx):
  """[B, h, w] -> [B, out_h, out_w]: horizontal then vertical linear pass, as cv::resize.

  Elementwise per output pixel (no matmul), so every pair of a batch gets
  the same bits as alone.
  """
  return _linear_pass(_linear_pass(x, 2, out_size[1], scale_yx[1]), 1, out_size[0], scale_yx[0])


def downscale(x, out_size, scale_step: float):
  """One pyramid level: cv::resize(src, dst, Size(), scale_step, scale_step, INTER_LINEAR)."""
  return resize_bilinear(x, out_size, (1.0 / scale_step, 1.0 / scale_step))


def upscale_flow(u, out_size, scale_step: float):
  """Flow component to the next finer level: resize to out_size, times 1 / scale_step."""
  h, w = u.shape[1], u.shape[2]
  scale = (1.0 / (out_size[0] / h), 1.0 / (out_size[1] / w))  # cv::resize with dsize given
  return resize_bilinear(u, out_size, scale) * _f32(1.0 / scale_step)


def _shift_prev(x, axis):
  """x[i - 1] along axis (1 or 2), replicating the first element."""
  first = x[:, :1] if axis == 1 else x[:, :, :1]
  rest = x[:, :-1] if axis == 1 else x[:, :, :-1]
  return ops.concatenate([first, rest], axis=axis)


def _shift_next(x, axis):
  """x[i + 1] along axis (1 or 2), replicating the last element."""
  rest = x[:, 1:] if axis == 1 else x[:, :, 1:]
  last = x[:, -1:] if axis == 1 else x[:, :, -1:]
  return ops.concatenate([rest, last], axis=axis)


def centred_gradient(x):
  """[B, H, W] -> (dx, dy): 0.5 (x[i+1] - x[i-1]), replicate border (OpenCV centeredGradient)."""
  dx = 0.5 * (_shift_next(x, 2) - _shift_prev(x, 2))
  dy = 0.5 * (_shift_next(x, 1) - _shift_prev(x, 1))
  return dx, dy


def forward_gradient(x):
  """[B, H, W] -> (dx, dy): x[i+1] - x[i], 0 on the last column / row (OpenCV forwardGradient)."""
  dx = ops.concatenate([x[:, :, 1:] - x[:, :, :-1], ops.zeros_like(x[:, :, :1])], axis=2)
  dy = ops.concatenate([x[:, 1:] - x[:, :-1], ops.zeros_like(x[:, :1])], axis=1)
  return dx, dy


def divergence(v1, v2):
  """(v1, v2) [B, H, W] -> v1[x] - v1[x-1] + v2[y] - v2[y-1], zero before the first column / row."""
  v1_prev = ops.concatenate([ops.zeros_like(v1[:, :, :1]), v1[:, :, :-1]], axis=2)
  v2_prev = ops.concatenate([ops.zeros_like(v2[:, :1]), v2[:, :-1]], axis=1)
  return (v1 - v1_prev) + (v2 - v2_prev)


def cubic_weights(t):
  """Fractional offsets t in [0, 1) -> the 4 Keys weights (a = CUBIC_A) of taps -1, 0, 1, 2."""
  a = CUBIC_A
  t1 = t + 1.0
  s = 1.0 - t
  w0 = ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a
  w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
  w2 = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
  w3 = 1.0 - w0 - w1 - w2
  return w0, w1, w2, w3


def warp_cubic(images, u1, u2):
  """images [B, H, W, C] sampled at (x + u1, y + u2) -> [B, H, W, C].

  cv::remap(INTER_CUBIC, BORDER_CONSTANT 0): bicubic over the 4x4 taps around
  the point, each tap outside the image counting as 0.
  """
  b, h, w, c = images.shape
  xs = ops.cast(ops.arange(w), "float32")[None, None, :] + u1
  ys = ops.cast(ops.arange(h), "float32")[None, :, None] + u2
  # Far outside every tap is outside; clip so the integer parts stay small.
  xs = ops.clip(xs, -3.0, w + 1.0)
  ys = ops.clip(ys, -3.0, h + 1.0)
  x0, y0 = ops.floor(xs), ops.floor(ys)
  wx, wy = cubic_weights(xs - x0), cubic_weights(ys - y0)
  x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
  flat = ops.reshape(images, (b * h * w, c))
  base = (ops.arange(b, dtype="int32") * (h * w))[:, None, None]
  cols, col_ok = [], []
  for k in range(4):
    xk = x0 + (k - 1)
    col_ok.append(ops.cast((xk >= 0) & (xk < w), "float32"))
    cols.append(ops.clip(xk, 0, w - 1))
  out = None
  for j in range(4):
    yj = y0 + (j - 1)
    row_w = wy[j] * ops.cast((yj >= 0) & (yj < h), "float32")
    row_base = base + ops.clip(yj, 0, h - 1) * w
    row = None
    for k in range(4):
      tap = ops.take(flat, row_base + cols[k], axis=0)  # [B, H, W, C]
      term = tap * (wx[k] * col_ok[k])[..., None]
      row = term if row is None else row + term
    term = row * row_w[..., None]
    out = term if out is None else out + term
  return out


def _batcher_pairs(n: int):
  """Batcher's odd-even merge sort network on n (a power of 2) wires: [(i, j)], i < j."""
  pairs = []
  p = 1
  while p < n:
    k = p
    while k >= 1:
      for j in range(k % p, n - k, 2 * k):
        for i in range(min(k, n - j - k)):
          if (i + j) // (2 * p) == (i + j + k) // (2 * p):
            pairs.append((i + j, i + j + k))
      k //= 2
    p *= 2
  return pairs


@functools.lru_cache(maxsize=None)
def median_network(n: int):
  """Compare-exchanges selecting the median (rank n // 2) of n values.

  Batcher's network on the next power of 2, the extra wires being +inf (so
  their comparators do nothing and are dropped), pruned backwards to what
  the median wire depends on. Returns [(i, j, need_min, need_max)].
  """
  size = 1
  while size < n:
    size *= 2
  pairs = [(i, j) for i, j in _batcher_pairs(size) if j < n]
  needed, ops_rev = {n // 2}, []
  for i, j in reversed(pairs):
    need_min, need_max = i in needed, j in needed
    if need_min or need_max:
      ops_rev.append((i, j, need_min, need_max))
      needed |= {i, j}
  return tuple(reversed(ops_rev))


def median_filter(x, size: int = 5):
  """[B, H, W] -> the size x size median of each pixel, replicate border (cv::medianBlur)."""
  r = size // 2
  h, w = x.shape[1], x.shape[2]
  xp = ops.concatenate([x[:, :1]] * r + [x] + [x[:, -1:]] * r, axis=1)
  xp = ops.concatenate([xp[:, :, :1]] * r + [xp] + [xp[:, :, -1:]] * r, axis=2)
  wires = [xp[:, dy:dy + h, dx:dx + w] for dy in range(size) for dx in range(size)]
  for i, j, need_min, need_max in median_network(size * size):
    lo = ops.minimum(wires[i], wires[j]) if need_min else None
    hi = ops.maximum(wires[i], wires[j]) if need_max else None
    wires[i], wires[j] = lo, hi
  return wires[size * size // 2]


def data_step(u1, u2, i1wx, i1wy, grad, rho_c, l_t):
  """v = u + TH(rho): the thresholding step of the data term (OpenCV estimateV, gamma 0)."""
  rho = rho_c + (i1wx * u1 + i1wy * u2)
  lt_grad = l_t * grad
  fi = -rho / ops.where(grad > FLT_EPSILON, grad, 1.0)
  below, above = rho < -lt_grad, rho > lt_grad
  small = grad <= FLT_EPSILON

  def delta(i1w_axis):
    return ops.where(below, l_t * i1w_axis,
                     ops.where(above, -l_t * i1w_axis,
                               ops.where(small, 0.0, fi * i1w_axis)))

  return u1 + delta(i1wx), u2 + delta(i1wy)


def dual_step(p1, p2, u, taut):
  """p = (p + taut grad u) / (1 + taut |grad u|), forward differences (OpenCV estimateDualVariables)."""
  ux, uy = forward_gradient(u)
  ng = 1.0 + taut * ops.sqrt(ux * ux + uy * uy)
  return (p1 + taut * ux) / ng, (p2 + taut * uy) / ng


def tvl1_iteration(state, data, consts):
  """One TV-L1 inner iteration of every pair.

  state: (u1, u2, p11, p12, p21, p22), each [B, H, W]; data: (I1wx, I1wy,
  grad, rho_c); consts: (l_t = lambda theta, theta, taut = tau / theta) as
  float32. Returns (new state, error [B] = sum |u_new - u|^2 per pair).
  """
  u1, u2, p11, p12, p21, p22 = state
  l_t, theta, taut = consts
  v1, v2 = data_step(u1, u2, *data, l_t)
  n1 = v1 + theta * divergence(p11, p12)
  n2 = v2 + theta * divergence(p21, p22)
  d1, d2 = n1 - u1, n2 - u2
  error = ops.sum(d1 * d1 + d2 * d2, axis=(1, 2))
  p11, p12 = dual_step(p11, p12, n1, taut)
  p21, p22 = dual_step(p21, p22, n2, taut)
  return (n1, n2, p11, p12, p21, p22), error


def _select(mask, new, old):
  """Per-pair where: mask [B] bool, arrays [B, ...]."""
  m = ops.reshape(mask, (-1,) + (1,) * (len(old.shape) - 1))
  return ops.where(m, new, old)


def solve_level(i0, i1, u1, u2, params: TVL1Params = TVL1Params()):
  """TV-L1 at one pyramid level: frames [B, H, W] (0..255), initial flow u1, u2.

  Returns (u1, u2, iterations [B] int32 per pair, loop trips int32 scalar),
  trips being the iterations the batch computed (its slowest pair per warp).
  """
  b, h, w = i0.shape
  scaled_eps = _f32(params.epsilon * params.epsilon * h * w)
  consts = (_f32(params.lambda_ * params.theta), _f32(params.theta),
            _f32(params.tau / params.theta))
  i1x, i1y = centred_gradient(i1)
  stacked = ops.stack([i1, i1x, i1y], axis=-1)
  zero = ops.zeros_like(i0)
  median = params.median_filtering if params.median_filtering > 1 else 0

  def warp_body(_, carry):
    u1, u2, p11, p12, p21, p22, iters, trips = carry
    warped = warp_cubic(stacked, u1, u2)
    i1w, i1wx, i1wy = warped[..., 0], warped[..., 1], warped[..., 2]
    grad = i1wx * i1wx + i1wy * i1wy
    rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
    data = (i1wx, i1wy, grad, rho_c)
    error = ops.full((b,), FLT_MAX, dtype="float32")

    def inner_cond(n, *loop):
      return ops.logical_and(n < params.inner_iterations, ops.any(loop[6] > scaled_eps))

    def inner_body(n, u1, u2, p11, p12, p21, p22, error, iters, trips):
      active = error > scaled_eps
      state = (u1, u2, p11, p12, p21, p22)
      new_state, new_error = tvl1_iteration(state, data, consts)
      if b == 1:  # the loop runs only while the one pair is active: no select needed
        state, error = new_state, new_error
      else:
        state = tuple(_select(active, a, o) for a, o in zip(new_state, state))
        error = ops.where(active, new_error, error)
      iters = iters + ops.cast(active, "int32")
      return (n + 1, *state, error, iters, trips + 1)

    def outer_cond(n, *loop):
      return ops.logical_and(n < params.outer_iterations, ops.any(loop[6] > scaled_eps))

    def outer_body(n, u1, u2, p11, p12, p21, p22, error, iters, trips):
      if median:  # one median graph for both components: [2B, H, W]
        active = error > scaled_eps
        filtered = median_filter(ops.concatenate([u1, u2], axis=0), median)
        if b == 1:  # runs only while the one pair is active
          u1, u2 = filtered[:1], filtered[1:]
        else:
          u1 = _select(active, filtered[:b], u1)
          u2 = _select(active, filtered[b:], u2)
      loop = ops.while_loop(inner_cond, inner_body,
                            (ops.convert_to_tensor(0, "int32"), u1, u2, p11, p12, p21, p22,
                             error, iters, trips))
      return (n + 1, *loop[1:])

    out = ops.while_loop(outer_cond, outer_body,
                         (ops.convert_to_tensor(0, "int32"), u1, u2, p11, p12, p21, p22,
                          error, iters, trips))
    u1, u2, p11, p12, p21, p22, _, iters, trips = out[1:]
    return (u1, u2, p11, p12, p21, p22, iters, trips)

  carry = (u1, u2, zero, zero, zero, zero, ops.zeros((b,), "int32"),
           ops.convert_to_tensor(0, "int32"))
  carry = ops.fori_loop(0, params.warps, warp_body, carry)
  return carry[0], carry[1], carry[6], carry[7]


def lockstep_graph(first, second, params: TVL1Params = TVL1Params()):
  """The whole solver on the batch at once (every op on [B, ...]), traceable.

  float32 [B, H, W] (0..255) pairs -> (flow, stats). flow: float32
  [B, H, W, 2] (dx, dy) in pixels. stats: "iterations" int32 [B, levels], the
  iterations that updated each pair; "computed" int32 [B, levels], the
  iterations the loops ran while the pair was in them (here the batch's,
  i.e. its slowest pair's per warp); levels finest first.
  """
  b, h, w = first.shape
  sizes = pyramid_sizes(h, w, params)
  i0s, i1s = [first], [second]
  for size in sizes[1:]:
    i0s.append(downscale(i0s[-1], size, params.scale_step))
    i1s.append(downscale(i1s[-1], size, params.scale_step))
  u1 = ops.zeros((b,) + sizes[-1], "float32")
  u2 = ops.zeros((b,) + sizes[-1], "float32")
  iterations, trips = [None] * len(sizes), [None] * len(sizes)
  for s in range(len(sizes) - 1, -1, -1):
    u1, u2, iterations[s], trips[s] = solve_level(i0s[s], i1s[s], u1, u2, params)
    if s > 0:
      u1 = upscale_flow(u1, sizes[s - 1], params.scale_step)
      u2 = upscale_flow(u2, sizes[s - 1], params.scale_step)
  computed = ops.broadcast_to(ops.stack(trips)[None], (b, len(sizes)))
  stats = {"iterations": ops.stack(iterations, axis=1), "computed": computed}
  return ops.stack([u1, u2], axis=-1), stats


def sequential_graph(first, second, params: TVL1Params = TVL1Params()):
  """The whole solver, one pair after the other in a loop inside the graph; as lockstep_graph.

  Each pair runs `lockstep_graph` on [1, H, W]: its own iterations only, and
  a working set 1 / B the size of the batch's.
  """
  b, h, w = first.shape
  levels = len(pyramid_sizes(h, w, params))

  def body(i, carry):
    flow, iterations, computed = carry
    pair_flow, st = lockstep_graph(ops.slice(first, (i, 0, 0), (1, h, w)),
                                   ops.slice(second, (i, 0, 0), (1, h, w)), params)
    return (ops.slice_update(flow, (i, 0, 0, 0), pair_flow),
            ops.slice_update(iterations, (i, 0), st["iterations"]),
            ops.slice_update(computed, (i, 0), st["computed"]))

  init = (ops.zeros((b, h, w, 2), "float32"), ops.zeros((b, levels), "int32"),
          ops.zeros((b, levels), "int32"))
  flow, iterations, computed = ops.fori_loop(0, b, body, init)
  return flow, {"iterations": iterations, "computed": computed}


BATCH_MODES = ("sequential", "lockstep")


def default_mode() -> str:
  """"sequential" when the backend computes on the CPU, else "lockstep" (bench/bench_tvl1.py)."""
  backend = keras.backend.backend()
  if backend == "jax":
    import jax  # pylint: disable=import-outside-toplevel
    return "sequential" if jax.default_backend() == "cpu" else "lockstep"
  if backend == "tensorflow":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return "lockstep" if tf.config.list_logical_devices("GPU") else "sequential"
  return "sequential"


def tvl1_graph(first, second, params: TVL1Params = TVL1Params(), mode: str = "lockstep"):
  """The whole solver, traceable: `lockstep_graph` or `sequential_graph` (mode)."""
  if mode not in BATCH_MODES:
    raise ValueError(f"mode must be one of {BATCH_MODES}, got {mode!r}")
  if mode == "sequential" and first.shape[0] > 1:
    return sequential_graph(first, second, params)
  return lockstep_graph(first, second, params)  # one pair: the two are the same


# ------------------------------------------------------------ compiled entry points

_COMPILED: dict = {}  # (backend, (B, H, W), params, mode) -> compiled tvl1_graph
_COMPILED_LOCK = threading.Lock()  # threads asking at once (an extraction's worker threads)
# share one compiled function, so its graph is traced and compiled once


def compiled_solver(shape, params: TVL1Params = TVL1Params(), mode: str = "lockstep"):
  """The compiled `tvl1_graph` for float32 inputs of `shape` [B, H, W] (cached)."""
  backend = keras.backend.backend()
  shape = tuple(int(d) for d in shape)
  if shape[0] == 1:
    mode = "lockstep"  # the same computation either way: compile it once
  key = (backend, shape, params, mode)
  with _COMPILED_LOCK:
    if key not in _COMPILED:
      _COMPILED[key] = _compile(functools.partial(tvl1_graph, params=params, mode=mode),
                                backend, shape)
    return _COMPILED[key]


def _compile(graph, backend: str, shape: tuple[int, ...]):
  """`graph` compiled for float32 inputs of `shape` under `backend` (on its first call)."""
  if backend == "tensorflow":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    spec = tf.TensorSpec(shape, tf.float32)
    return tf.function(graph, input_signature=[spec, spec], jit_compile=True)
  if backend == "jax":
    import jax  # pylint: disable=import-outside-toplevel
    return jax.jit(graph)
  return graph  # e.g. torch: the same keras.ops, run as they come (no compilation)


def to_working_range(frames) -> np.ndarray:
  """uint8 -> float32 0..255; float -> float32 times 255 (OpenCV's convertTo)."""
  frames = np.asarray(frames)
  if frames.dtype == np.uint8:
    return frames.astype(np.float32)
  if not np.issubdtype(frames.dtype, np.floating):
    raise ValueError(f"frames must be uint8 or float, got {frames.dtype}")
  return (frames.astype(np.float32) * np.float32(PIXEL_SCALE_FLOAT)).astype(np.float32)


def batch_bytes(batch: int, height: int, width: int, mode: str = "lockstep") -> int:
  """Estimated peak memory of one compiled call on [batch, height, width].

  lockstep: BYTES_PER_PIXEL per pixel of every pair; sequential: that for one
  pair, plus IO_BYTES_PER_PIXEL (the two frames and the flow) per pair.
  """
  if mode == "sequential":
    return (BYTES_PER_PIXEL + IO_BYTES_PER_PIXEL * batch) * height * width
  return BYTES_PER_PIXEL * batch * height * width


def split_batch(batch: int, height: int, width: int,
                max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
                pairs_per_call: int | None = None,
                mode: str = "lockstep") -> list[tuple[int, int]]:
  """[(start, stop)] sub-batches, as few and as even as possible, each within the budget.

  At most pairs_per_call pairs (None: no limit) and max_batch_bytes
  (`batch_bytes` in `mode`) per sub-batch, but always at least one pair (a
  single pair over the budget still runs).
  """
  if batch <= 0:
    return []
  per_pair = batch_bytes(2, height, width, mode) - batch_bytes(1, height, width, mode)
  fixed = batch_bytes(1, height, width, mode) - per_pair  # batch_bytes is affine in batch
  per_call = max(1, (max_batch_bytes - fixed) // per_pair)
  if pairs_per_call is not None:
    per_call = max(1, min(per_call, int(pairs_per_call)))
  parts = -(-batch // per_call)
  bounds = [round(k * batch / parts) for k in range(parts + 1)]
  return [(bounds[k], bounds[k + 1]) for k in range(parts)]


def tvl1_flow_with_stats(first, second, params: TVL1Params = TVL1Params(),
                         max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
                         pairs_per_call: int | None = None, workers: int = 1,
                         mode: str | None = None):
  """`tvl1_flow`, plus the stats of `tvl1_graph` (numpy) of every call, in order."""
  first, second = to_working_range(first), to_working_range(second)
  if first.shape != second.shape or first.ndim != 3:
    raise ValueError(f"first and second must both be [B, H, W], got {first.shape} "
                     f"and {second.shape}")
  b, h, w = first.shape
  if h < 3 or w < 3:
    raise ValueError(f"frames must be at least 3x3 pixels, got {h}x{w}")
  mode = default_mode() if mode is None else mode
  if mode not in BATCH_MODES:
    raise ValueError(f"mode must be one of {BATCH_MODES}, got {mode!r}")
  workers = max(1, int(workers))
  if workers > 1 and pairs_per_call is None:
    pairs_per_call = -(-b // workers)  # one call per worker
  parts = split_batch(b, h, w, max(1, max_batch_bytes // workers), pairs_per_call, mode)

  def run(part):
    start, stop = part
    fn = compiled_solver((stop - start, h, w), params, mode)
    flow, st = fn(ops.convert_to_tensor(first[start:stop]),
                  ops.convert_to_tensor(second[start:stop]))
    return ops.convert_to_numpy(flow), {k: ops.convert_to_numpy(v) for k, v in st.items()}

  if workers > 1 and len(parts) > 1:
    with concurrent.futures.ThreadPoolExecutor(min(workers, len(parts))) as pool:
      results = list(pool.map(run, parts))
  else:
    results = [run(part) for part in parts]
  flow = (np.concatenate([r[0] for r in results]) if results
          else np.zeros((0, h, w, 2), np.float32))
  return flow.astype(np.float32), [r[1] for r in results]


def tvl1_flow(first, second, params: TVL1Params = TVL1Params(),
              max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
              pairs_per_call: int | None = None, workers: int = 1,
              mode: str | None = None) -> np.ndarray:
  """TV-L1 flow from first[i] to second[i] for every pair of the batch.

  first, second: uint8 (0..255) or float ([0, 1]) grayscale [B, H, W].
  Returns float32 [B, H, W, 2]: (dx, dy) in pixels, as
  cv2.optflow.DualTVL1OpticalFlow_create().calc(first[i], second[i], None).

  The batch is one compiled call unless split: into `workers` calls run on
  as many threads (one compiled call keeps about one CPU core busy), into
  calls of at most `pairs_per_call` pairs, and so that the concurrent calls
  stay within `max_batch_bytes` together (`batch_bytes`). mode: "lockstep"
  (every op on the whole batch, converged pairs masked: for GPUs),
  "sequential" (a loop over the pairs inside the computation: for CPUs), None:
  `default_mode()`.
  """
  return tvl1_flow_with_stats(first, second, params, max_batch_bytes, pairs_per_call,
                              workers, mode)[0]
