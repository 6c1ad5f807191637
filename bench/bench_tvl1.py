"""TV-L1 at 224x224: OpenCV's engine against the Keras engine, and the Keras engine's floor.

The same N (default 32) consecutive grayscale 224x224 pairs go through:

  opencv  cv2.optflow.DualTVL1OpticalFlow (default parameters), (a) one solver,
          pairs in sequence, cv2.setNumThreads(cores) (OpenCV's own row
          parallelism), and (b) a thread pool of `cores` solvers with
          cv2.setNumThreads(1), fed B pairs at a time. Skipped when cv2 is
          not importable.
  keras   wtal_tf.features.tvl1.tvl1_flow on the active Keras backend
          (KERAS_BACKEND), fed B pairs at a time: (a) one compiled call of B
          pairs in lockstep mode (every op on the whole batch, converged
          pairs masked), (b) one call in sequential mode (a loop over the B
          pairs inside the computation), (c) `cores` calls of B / cores pairs
          in sequential mode on `cores` threads. Whatever the backend does
          with the cores inside one call. Compilation is done before timing.

fields/s = N / wall time. Memory-traffic floor of the Keras engine: every
iteration must read u1 u2 p11 p12 p21 p22 I1wx I1wy grad rho_c and write u1 u2
p11 p12 p21 p22 (16 float32 = 64 bytes per pixel); bytes = 64 x sum over pairs
and levels of (iterations computed for the pair at that level, i.e. in
lockstep mode the batch's, x pixels of the level). floor time = bytes / the rate of a plain numpy
copy of a large array (bytes read + written per second, one thread), measured
in the same run. Reported: floor time, measured / floor.

Frames: --frames=bikes (default) is real footage (/work/shared/videos/bikes.mp4
or --video), decoded with PyAV and made 224x224 gray with
wtal_tf.features.preprocess.gray (needs cv2); --frames=smooth is the texture
moving 2 px/frame of bench_extract (numpy only). Without av/cv2 or the video,
smooth is used.

  flock /tmp/wtal_heavy.lock .venv/bin/python -m bench.bench_tvl1
  KERAS_BACKEND=jax flock /tmp/wtal_heavy.lock .venv/bin/python -m bench.bench_tvl1
  .venv/bin/python -m bench.bench_tvl1 --part=agreement   # Keras vs OpenCV vs OpenCV + noise
"""

import argparse
import concurrent.futures
import os
import pathlib
import platform
import time

import keras
import numpy as np

from wtal_tf.config import ExtractConfig
from wtal_tf.features import tvl1

CROP = ExtractConfig().crop_size  # pixels
RESIZE_SHORTER = ExtractConfig().resize_shorter  # pixels
FLOW_BOUND = 20.0  # pixels: features.flow.FLOW_BOUND (restated: this runs without cv2)
DEFAULT_VIDEO = pathlib.Path(__file__).resolve().parents[1].parent / "shared/videos/bikes.mp4"
BATCHES = tuple(int(b) for b in os.environ.get("TVL1_BENCH_BATCHES", "1,8,32").split(","))


def try_cv2():
  try:
    import cv2  # pylint: disable=import-outside-toplevel
    return cv2
  except ImportError:
    return None


def smooth_gray(n: int, size: int = CROP, shift: int = 2, seed: int = 0) -> np.ndarray:
  """uint8 [n, size, size]: a smooth random texture moving `shift` px right per frame."""
  rng = np.random.default_rng(seed)
  width = size + shift * n + 8
  base = rng.uniform(0, 1, ((size + 8) // 4 + 2, width // 4 + 2))
  texture = np.kron(base, np.ones((4, 4)))[:size + 8, :width]
  kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
  kernel /= kernel.sum()
  for axis in (0, 1):  # separable Gaussian blur, sigma 2 px
    texture = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), axis, texture)
  texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255
  start = shift * n
  return np.stack([texture[4:4 + size, start - shift * k:start - shift * k + size]
                   for k in range(n)]).round().astype(np.uint8)


def video_gray(path, n: int, first: int = 0) -> np.ndarray:
  import av  # pylint: disable=import-outside-toplevel
  from wtal_tf.features import preprocess  # pylint: disable=import-outside-toplevel
  frames = []
  with av.open(str(path)) as container:
    for k, frame in enumerate(container.decode(video=0)):
      if k >= first:
        frames.append(frame.to_ndarray(format="rgb24"))
      if len(frames) == n:
        break
  return preprocess.gray(np.stack(frames), RESIZE_SHORTER, CROP)


def load_frames(kind: str, n: int, video: str):
  if kind == "bikes":
    try:
      if try_cv2() is not None and pathlib.Path(video).exists():
        return video_gray(video, n), f"{pathlib.Path(video).name} frames 0..{n - 1}"
    except ImportError:
      pass
    print(f"(no av/cv2 or no {video}: using the smooth texture)")
  return smooth_gray(n), "smooth texture moving 2 px/frame"


def copy_rate(megabytes: int = 256, repeats: int = 5) -> float:
  """Bytes read + written per second by a plain numpy copy of a large float32 array."""
  src = np.ones(megabytes * 2 ** 20 // 4, np.float32)
  dst = np.empty_like(src)
  np.copyto(dst, src)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    np.copyto(dst, src)
    best = min(best, time.perf_counter() - start)
  return 2 * src.nbytes / best


def traffic_bytes(stats, height: int, width: int) -> int:
  """64 B x pixels x iterations computed, over every call, pair and level (see the docstring)."""
  per_pixel = 4 * (tvl1.ITERATION_FLOATS_READ + tvl1.ITERATION_FLOATS_WRITTEN)
  area = np.array([h * w for h, w in tvl1.pyramid_sizes(height, width)], np.int64)
  return per_pixel * int(sum((st["computed"].astype(np.int64) * area).sum() for st in stats))


def bench_opencv(cv2, first, second, cores: int) -> list:
  rows = []
  n = len(first)
  cv2.setNumThreads(cores)
  solver = cv2.optflow.DualTVL1OpticalFlow_create()
  solver.calc(first[0], second[0], None)  # warm-up
  start = time.perf_counter()
  for a, b in zip(first, second):
    solver.calc(a, b, None)
  seconds = time.perf_counter() - start
  rows.append(("opencv", "any", f"one solver, cv2.setNumThreads({cores})", n / seconds, seconds,
               None))
  cv2.setNumThreads(1)
  solvers = [cv2.optflow.DualTVL1OpticalFlow_create() for _ in range(cores)]
  for batch in BATCHES:
    if batch == 1:
      continue  # a pool gets nothing from one pair at a time

    def run(k, chunk):
      for i in chunk:
        solvers[k].calc(first[i], second[i], None)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(cores) as pool:
      for lo in range(0, n, batch):
        idx = list(range(lo, min(lo + batch, n)))
        list(pool.map(run, range(cores), [idx[k::cores] for k in range(cores)]))
    seconds = time.perf_counter() - start
    rows.append(("opencv", batch, f"{cores} solvers on {cores} threads, cv2.setNumThreads(1)",
                 n / seconds, seconds, None))
  cv2.setNumThreads(cores)
  return rows


def bench_keras(first, second, cores: int, rate: float) -> list:
  rows = []
  n, h, w = first.shape
  configs = []
  for batch in BATCHES:
    if batch == 1:
      configs.append((batch, "one call", dict(workers=1, mode="lockstep")))
      continue
    configs.append((batch, "one call, lockstep", dict(workers=1, mode="lockstep")))
    configs.append((batch, "one call, sequential", dict(workers=1, mode="sequential")))
    configs.append((batch, f"{cores} calls on {cores} threads, sequential",
                    dict(workers=cores, mode="sequential")))
  for batch, label, kw in configs:
    start = time.perf_counter()  # compile (and run once) every shape of this row, not timed
    tvl1.tvl1_flow(first[:batch], second[:batch], **kw)
    print(f"  compile + first run of [{batch}, {h}, {w}] {label} ({keras.backend.backend()}): "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    stats = []
    start = time.perf_counter()
    for lo in range(0, n, batch):
      _, st = tvl1.tvl1_flow_with_stats(first[lo:lo + batch], second[lo:lo + batch], **kw)
      stats.extend(st)
    seconds = time.perf_counter() - start
    floor = traffic_bytes(stats, h, w) / rate
    rows.append((f"keras ({keras.backend.backend()})", batch, label, n / seconds, seconds, floor))
    print(f"  {rows[-1]}", flush=True)
  return rows


def agreement(first, second, cv2):
  """Per pair: Keras vs OpenCV, and OpenCV vs OpenCV on the frames + U(-0.001, 0.001) gray noise."""
  solver = cv2.optflow.DualTVL1OpticalFlow_create()
  ours = tvl1.tvl1_flow(first, second, pairs_per_call=1, workers=os.cpu_count() or 1)
  rng = np.random.default_rng(0)

  def epe(a, b):
    return float(np.sqrt(((a - b) ** 2).sum(-1)).mean())

  def unit(f):
    return np.clip(f, -FLOW_BOUND, FLOW_BOUND) / FLOW_BOUND

  def scaled(x):
    return np.asarray(x, np.float32) / np.float32(255)

  print("| pair | mean abs flow (px) | EPE keras-opencv (px) | mean abs unit diff | "
        "EPE opencv(+noise)-opencv (px) |")
  print("|---|---|---|---|---|")
  for i, (a, b) in enumerate(zip(first, second)):
    want = solver.calc(a, b, None)
    noisy = solver.calc(scaled(a + rng.uniform(-1e-3, 1e-3, a.shape)), scaled(b), None)
    print(f"| {i} | {np.sqrt((want ** 2).sum(-1)).mean():.2f} | {epe(ours[i], want):.4f} | "
          f"{np.abs(unit(ours[i]) - unit(want)).mean():.5f} | {epe(noisy, want):.4f} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", default="speed", choices=["speed", "agreement"])
  parser.add_argument("--frames", default="bikes", choices=["bikes", "smooth"])
  parser.add_argument("--video", default=str(DEFAULT_VIDEO))
  parser.add_argument("--pairs", type=int, default=32, help="pairs timed (a multiple of 32)")
  parser.add_argument("--engines", default="opencv,keras")
  args = parser.parse_args()
  cores = os.cpu_count() or 1
  gray, source = load_frames(args.frames, args.pairs + 1, args.video)
  first, second = gray[:-1], gray[1:]
  cv2 = try_cv2()
  print(f"# TV-L1 224x224, {args.pairs} pairs of {source}; {cores} cores, "
        f"{platform.processor() or platform.machine()}, keras {keras.__version__} "
        f"backend {keras.backend.backend()}", flush=True)
  if args.part == "agreement":
    if cv2 is None:
      raise SystemExit("agreement needs cv2")
    agreement(first, second, cv2)
    return
  rate = copy_rate()
  print(f"numpy copy: {rate / 1e9:.1f} GB/s (read + write)", flush=True)
  rows = []
  if "opencv" in args.engines:
    if cv2 is None:
      print("(cv2 not importable: no OpenCV rows)")
    else:
      rows += bench_opencv(cv2, first, second, cores)
      print(f"  {rows[-1]}", flush=True)
  if "keras" in args.engines:
    rows += bench_keras(first, second, cores, rate)
  print()
  print("| engine | pairs per batch | how | fields/s | s | traffic floor s | measured / floor |")
  print("|---|---|---|---|---|---|---|")
  for engine, batch, how, fps, seconds, floor in rows:
    floor_cols = (f"{floor:.2f} | {seconds / floor:.1f}x" if floor else "- | -")
    print(f"| {engine} | {batch} | {how} | {fps:.2f} | {seconds:.1f} | {floor_cols} |")


if __name__ == "__main__":
  main()
