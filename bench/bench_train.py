"""Training throughput on a THUMOS14-sized workload, against the machine's FLOP floor.

200 videos with THUMOS14's length distribution, two streams of 1024-d
features, one whole video per step. Reports segments/s and epoch time with
features held in memory and read from disk through tf.data, the epoch's FLOPs
divided by the FLOP rate of a large matmul measured in the same run (the
floor), trace count and first-step latency.

python -m bench.bench_train [--videos=200] [--epochs=3]
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from bench.workload import thumos_lengths
from wtal_tf import config as C
from wtal_tf import contract
from wtal_tf.data import datasets as data
from wtal_tf.training import input_pipeline
from wtal_tf.training import trainer as training

D = contract.FEATURE_DIM
CLASSES = 20  # THUMOS14's
UNITS = C.ModelConfig().attention_units


def matmul_flops_per_second(n=2048, repeats=20):
  rng = np.random.default_rng(0)
  a = tf.constant(rng.standard_normal((n, n), dtype=np.float32))
  b = tf.constant(rng.standard_normal((n, n), dtype=np.float32))
  mm = tf.function(lambda x, y: tf.matmul(x, y))
  mm(a, b).numpy()
  start = time.perf_counter()
  for _ in range(repeats):
    out = mm(a, b)
  out.numpy()
  return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def train_flops_per_segment(d=D, units=UNITS, classes=CLASSES, streams=2):
  """Forward multiply-adds x2, backward ~2x forward (weights and activations)."""
  forward = 2 * d * (units + classes + 1 + 2) + 2 * units
  return 3 * forward * streams


def write_dataset(root, lengths, rng):
  database = {}
  for k, t in enumerate(lengths):
    name = f"v{k:04d}"
    for s in ("rgb", "flow"):
      os.makedirs(f"{root}/features/train/{s}", exist_ok=True)
      np.save(f"{root}/features/train/{s}/{name}.npy",
              rng.random((t, D), dtype=np.float32))
    database[name] = {"subset": "validation", "annotations": [
        {"label": f"c{k % CLASSES:02d}", "segment": [0, 1]}]}
  os.makedirs(f"{root}/features/test/rgb", exist_ok=True)
  os.makedirs(f"{root}/features/test/flow", exist_ok=True)
  for s in ("rgb", "flow"):
    np.save(f"{root}/features/test/{s}/t0.npy", rng.random((3, D), dtype=np.float32))
  database["t0"] = {"subset": "test", "annotations": [{"label": "c00", "segment": [0, 1]}]}
  with open(f"{root}/gt.json", "w") as f:
    json.dump({"database": database}, f)


def run_epochs(dataset, cache, epochs, seed=0):
  cfg = C.Config(model=C.ModelConfig(attention_units=UNITS))
  model = training.build_model(cfg, dataset)
  step, traces = training.compiled_train_step(model, dataset)
  n = len(dataset.train)
  order = input_pipeline.training_order(n, 0, 1.0, seed, 0, n * epochs)
  stream = input_pipeline.training_dataset(dataset.train, order, dataset.num_classes,
                                          dataset.streams, dataset.feature_dims, cache)
  times, first, start = [], None, time.perf_counter()
  for k, (features, labels) in enumerate(stream):
    t0 = time.perf_counter()
    float(step(features, labels)["total"])
    if first is None:
      first = time.perf_counter() - t0
    if (k + 1) % n == 0:
      times.append(time.perf_counter() - start)
      start = time.perf_counter()
  return times, traces[0], first


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--videos", type=int, default=200)
  parser.add_argument("--epochs", type=int, default=3)
  args = parser.parse_args()
  tf.config.experimental.enable_op_determinism()
  rng = np.random.default_rng(0)
  lengths = thumos_lengths(args.videos, "validation", seed=0)
  segments = int(lengths.sum())
  with tempfile.TemporaryDirectory() as root:
    write_dataset(root, lengths, rng)
    ds = data.load_dataset(C.DataConfig(data_dir=root))
    memory = input_pipeline.FeatureCache(ds.streams, True)
    for v in ds.train:
      memory.load(v)
    mem_times, traces, first = run_epochs(ds, memory, args.epochs)
    disk_times, _, _ = run_epochs(ds, input_pipeline.FeatureCache(ds.streams, False),
                                  args.epochs)
  rate = matmul_flops_per_second()
  floor = segments * train_flops_per_segment() / rate
  mem = float(np.median(mem_times[1:] or mem_times))
  disk = float(np.median(disk_times[1:] or disk_times))
  print(f"videos {args.videos}, segments/epoch {segments}, feature dim {D} x 2 streams")
  print(f"matmul rate: {rate / 1e9:.1f} GFLOP/s; epoch FLOPs {segments * train_flops_per_segment() / 1e9:.2f} G"
        f" -> floor {floor:.2f} s")
  print(f"epoch (memory): {mem:.2f} s = {segments / mem:,.0f} segments/s = {mem / floor:.2f}x floor")
  print(f"epoch (disk):   {disk:.2f} s = {segments / disk:,.0f} segments/s; disk/memory = {disk / mem:.2f}")
  print(f"train_step traces: {traces}; first step {first:.2f} s")
  print(f"all epochs (memory): {[round(t, 2) for t in mem_times]}; (disk): {[round(t, 2) for t in disk_times]}")


if __name__ == "__main__":
  main()
