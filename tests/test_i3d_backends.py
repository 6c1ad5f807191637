"""The I3D layer classes (wtal_tf.features.i3d) give the same output under JAX as under TensorFlow.

Keras picks its backend at import, so the JAX side runs in a subprocess: the
same random weights (every variable, batch-norm statistics included) and the
same clip go through InceptionI3d under KERAS_BACKEND=jax, and its pooled
features and logits must match this process's within float32 tolerance.
"""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from wtal_tf import contract
from wtal_tf.features import i3d

REPO = pathlib.Path(__file__).resolve().parents[1]
CLIP = (1, i3d.SEGMENT_FRAMES, 32, 32, 3)  # a tiny RGB clip [N, T, H, W, C]

# Runs in the subprocess: argv = weights .npz, clip .npy, output .npz.
CHILD = """
import sys
import keras
import numpy as np
from wtal_tf.features import i3d
assert keras.backend.backend() == "jax", keras.backend.backend()
weights = np.load(sys.argv[1])
# Every variable is overwritten below: skip JAX's slow random initialisation
# (one compiled truncated-normal per kernel shape).
keras.initializers.HeNormal.__call__ = lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype)
model = i3d.InceptionI3d(3, name="inception_i3d_rgb")
names = [w.path for w in model.weights]
assert names == list(weights["names"]), "variable order differs"
model.set_weights([weights[f"w{k}"] for k in range(len(names))])
clip = np.load(sys.argv[2])
features = model.predict(clip, verbose=0)  # model(clip, training=False), jit-compiled
logits = keras.ops.convert_to_numpy(model.logits(features))
np.savez(sys.argv[3], features=features, logits=logits)
"""


def test_inception_i3d_same_under_jax_and_tensorflow(tmp_path):
  if keras.backend.backend() != "tensorflow":
    pytest.skip("the TensorFlow run starts the JAX one")
  pytest.importorskip("jax")
  rng = np.random.default_rng(0)
  model = i3d.InceptionI3d(3, seed=0, name="inception_i3d_rgb")
  values = []
  for w in model.weights:  # conv kernels from the seeded initialiser; the rest random
    v = keras.ops.convert_to_numpy(w)
    if w.path.endswith("moving_variance"):
      v = rng.uniform(0.5, 1.5, v.shape)
    elif w.path.endswith(("moving_mean", "beta", "bias")):
      v = rng.normal(0, 0.1, v.shape)
    values.append(np.asarray(v, np.float32))
  model.set_weights(values)
  clip = rng.uniform(-1, 1, CLIP).astype(np.float32)
  features = keras.ops.convert_to_numpy(model(clip, training=False))
  logits = keras.ops.convert_to_numpy(model.logits(features))
  assert features.shape == (1, contract.FEATURE_DIM) and logits.shape == (1, i3d.NUM_KINETICS_CLASSES)
  assert np.abs(features).max() > 1e-3 and (features > 0).mean() > 0.1  # not a dead network

  weights = tmp_path / "weights.npz"
  np.savez(weights, names=np.array([w.path for w in model.weights]),
           **{f"w{k}": v for k, v in enumerate(values)})
  np.save(tmp_path / "clip.npy", clip)
  out = tmp_path / "jax.npz"
  env = {**os.environ, "KERAS_BACKEND": "jax",
         "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
  proc = subprocess.run([sys.executable, "-c", CHILD, str(weights), str(tmp_path / "clip.npy"),
                         str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  other = np.load(out)
  np.testing.assert_allclose(other["features"], features, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(other["logits"], logits, rtol=1e-4, atol=1e-4)
