"""I3D RGB extraction speed against its FLOP floor.

Kinetics-400 RGB weights, batches of 16-frame 224x224 segments through
SegmentEncoder (one tf.function, one host transfer per batch). FLOPs per segment
are counted analytically from the traced graph: every Conv3D contributes
2 x output elements x kernel volume x input channels (multiply + add); batch
norm, ReLU, pools and the mean are left out (< 1% here). The floor is those
FLOPs divided by the rate of a plain float32 matmul (n x n) measured in the same
run; the ratio measured / floor is the figure of merit (target <= 1.5).

flock -x /tmp/wtal_heavy.lock .venv/bin/python -m bench.bench_i3d [--batch=4] [--repeats=5]
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

from bench.bench_train import matmul_flops_per_second
from wtal_tf.config import ExtractConfig
from wtal_tf.contract import SEGMENT_FRAMES
from wtal_tf.features import encoder as encoder_lib

CROP = ExtractConfig().crop_size  # pixels, kinetics-i3d's input size


def conv_flops_per_segment(encoder: encoder_lib.SegmentEncoder, size: int = CROP) -> int:
  """2 x multiply-adds of every Conv3D in the traced graph of one segment."""
  spec = tf.TensorSpec((1, SEGMENT_FRAMES, size, size, encoder.channels), tf.float32)
  graph = tf.function(lambda x: encoder.model(x, training=False)).get_concrete_function(spec).graph
  flops = 0
  for op in graph.get_operations():
    if op.type == "Conv3D":
      out = op.outputs[0].shape.as_list()
      kernel = op.inputs[1].shape.as_list()  # [kt, kh, kw, c_in, c_out]
      flops += 2 * int(np.prod(out)) * int(np.prod(kernel[:4]))
  return flops


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4, help="segments per call")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls")
  parser.add_argument("--matmul_n", type=int, default=4096, help="matmul size (n x n)")
  args = parser.parse_args()

  encoder = encoder_lib.build_encoder("rgb")
  clips = np.random.default_rng(0).uniform(
      -1, 1, (args.batch, SEGMENT_FRAMES, CROP, CROP, 3)).astype(np.float32)
  start = time.perf_counter()
  encoder(clips)
  first_call = time.perf_counter() - start
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    encoder(clips)
    times.append(time.perf_counter() - start)
  per_segment = float(np.median(times)) / args.batch
  rate = matmul_flops_per_second(n=args.matmul_n, repeats=5)
  flops = conv_flops_per_segment(encoder)
  floor = flops / rate
  print(json.dumps({
      "batch_segments": args.batch,
      "segments_per_second": round(1 / per_segment, 3),
      "seconds_per_segment": round(per_segment, 3),
      "gflops_per_segment": round(flops / 1e9, 2),
      "matmul_gflops_per_second": round(rate / 1e9, 1),
      "floor_seconds_per_segment": round(floor, 3),
      "ratio_to_floor": round(per_segment / floor, 2),
      "first_call_seconds": round(first_call, 1),
      "traces": encoder.trace_count,
  }, indent=1))


if __name__ == "__main__":
  main()
