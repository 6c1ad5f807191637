"""Does the attention end above the background on planted actions? Glorot vs N(0, s²).

Small planted-action data: 3 classes, 60 videos of 100 segments, one
10-segment action each (class prototype + shared motion on Gaussian noise),
one stream; the full loss, Adam 1e-3, 600 steps, for 4 seeds and each
initialiser. Prints mean λ on action / background segments at the end.

python -m bench.init_probe
"""

import argparse

import numpy as np
import keras
import tensorflow as tf

from wtal_tf.config import LossConfig
from wtal_tf.modeling.model import WTALModel

D, CLASSES, VIDEOS, T, STEPS = 16, 3, 60, 100, 600


def videos(rng):
  prototypes = rng.standard_normal((CLASSES, D))
  motion = rng.standard_normal(D)
  out = []
  for k in range(VIDEOS):
    c, start = k % CLASSES, rng.integers(0, T - 10)
    action = np.zeros(T, bool)
    action[start:start + 10] = True
    x = rng.standard_normal((T, D))
    x[action] += 3.0 * prototypes[c] + 1.5 * motion
    out.append((x.astype(np.float32), np.eye(CLASSES, dtype=np.float32)[c], action))
  return out


def run(init_stddev, seed, data):
  model = WTALModel(CLASSES, ("rgb",), 256, LossConfig().to_dict(), seed=seed,
                    init_stddev=init_stddev)
  model.build_for({"rgb": D})
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  step = tf.function(model.train_step, reduce_retracing=True)
  rng = np.random.default_rng(seed)
  for _ in range(STEPS):
    x, y, _ = data[rng.integers(len(data))]
    step(({"rgb": tf.constant(x)}, tf.constant(y)))
  att = [model.branches["rgb"](x)["attention"].numpy() for x, _, _ in data]
  on = np.concatenate([a[m] for a, (_, _, m) in zip(att, data)]).mean()
  off = np.concatenate([a[~m] for a, (_, _, m) in zip(att, data)]).mean()
  return on, off


def main():
  argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
  data = videos(np.random.default_rng(0))
  for name, stddev in (("glorot", 0.0), ("N(0, 0.001^2)", 1e-3)):
    for seed in range(4):
      on, off = run(stddev, seed, data)
      print(f"{name:>14} seed {seed}: λ action {on:.2f}, background {off:.2f} "
            f"-> {'above' if on > off else 'BELOW'}")


if __name__ == "__main__":
  main()
