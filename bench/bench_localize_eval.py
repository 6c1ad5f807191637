"""Localization of 212 THUMOS14-length test videos; evaluation of 50,000 predictions.

python -m bench.bench_localize_eval
"""

import argparse
import itertools
import operator
import time

import numpy as np

from bench.workload import thumos_lengths
from tests import pandas_eval
from tests import reference_eval
from wtal_tf.config import LocalizeConfig
from wtal_tf.data import groundtruth
from wtal_tf.evaluation import activitynet
from wtal_tf.evaluation import metrics as evaluation
from wtal_tf.localization.localize import localize
from wtal_tf.localization.outputs import StreamOutput

CLASSES = 20
REPEATS = 5


def fake_outputs(t, rng):
  """Attention with action-like bumps and a T-CAM, per stream."""
  out = {}
  for s in ("rgb", "flow"):
    bumps = np.convolve(rng.random(t) < 0.05, np.ones(8), "same")
    attention = np.clip(0.2 * rng.random(t) + 0.7 * (bumps > 0), 0, 1)
    probs = rng.dirichlet(np.ones(CLASSES) * 0.3)
    out[s] = StreamOutput(attention.astype(np.float32),
                          rng.normal(size=(t, CLASSES + 1)).astype(np.float32), probs)
  return out


def bench_localization(rng):
  videos = [fake_outputs(t, rng) for t in thumos_lengths(212, "test", seed=1)]
  cfg = LocalizeConfig(proposal_source="attention")
  start = time.perf_counter()
  total = sum(len(localize(v, cfg)) for v in videos)
  seconds = time.perf_counter() - start
  print(f"localization: 212 videos, {total} detections in {seconds:.3f} s "
        f"({seconds / 212 * 1e3:.2f} ms/video)")


def bench_evaluation(rng, predictions=50_000, videos=200):
  names = [f"c{k:02d}" for k in range(CLASSES)]
  database, results = {}, {}
  for v in range(videos):
    anns = []
    for _ in range(rng.integers(1, 30)):
      s = float(rng.uniform(0, 200))
      anns.append({"label": names[rng.integers(CLASSES)], "segment": [s, s + float(rng.uniform(0.5, 20))]})
    database[f"v{v}"] = {"subset": "test", "annotations": anns}
    results[f"v{v}"] = []
  for _ in range(predictions):
    v = f"v{rng.integers(videos)}"
    s = float(rng.uniform(0, 200))
    results[v].append({"label": names[rng.integers(CLASSES)], "score": float(rng.random()),
                       "segment": [s, s + float(rng.uniform(0.5, 20))]})
  tious = [round(0.1 * k, 1) for k in range(1, 10)]
  gt = groundtruth.select_subset(groundtruth.parse_database(database, "gt"), "test", "gt")
  parse_s, score_s = [], []
  for _ in range(REPEATS):
    start = time.perf_counter()
    preds = activitynet.parse_detections({"results": results}, "dets")
    parse_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    fast = evaluation.evaluate(gt, preds, tious)
    score_s.append(time.perf_counter() - start)
  parse_s, score_s = float(np.median(parse_s)), float(np.median(score_s))
  fields = operator.itemgetter("label", "score", "segment")
  start = time.perf_counter()
  list(map(fields, itertools.chain.from_iterable(results.values())))
  floor_s = time.perf_counter() - start
  fast_s = parse_s + score_s
  start = time.perf_counter()
  slow_map, slow_ap, _ = reference_eval.mean_ap(database, "test", results, tious)
  slow_s = time.perf_counter() - start
  identical = np.array_equal(fast.ap, slow_ap) and np.array_equal(fast.mean_ap, slow_map)
  print(f"evaluation: {predictions} predictions, {videos} videos, {CLASSES} classes, 9 tIoUs: "
        f"{fast_s:.3f} s vectorised (parse {parse_s:.3f} s + score {score_s:.3f} s, median of "
        f"{REPEATS}) vs {slow_s:.2f} s loop = {slow_s / fast_s:.1f}x; identical numbers: {identical}")
  print(f"  one itemgetter pass over the detection dicts alone (no reader does less): "
        f"{floor_s:.3f} s")
  start = time.perf_counter()
  _, pandas_ap, _ = pandas_eval.mean_ap(database, "test", results, tious)
  pandas_s = time.perf_counter() - start
  print(f"  the same loop with pandas as in ActivityNet's script: {pandas_s:.1f} s = "
        f"{pandas_s / fast_s:.0f}x; identical numbers: {np.array_equal(fast.ap, pandas_ap)}")


def main():
  argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
  rng = np.random.default_rng(0)
  bench_localization(rng)
  bench_evaluation(rng)


if __name__ == "__main__":
  main()
