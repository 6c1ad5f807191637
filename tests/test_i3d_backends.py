"""I3D (wtal_tf.features.i3d, through features.encoder) gives the same output under JAX
as under TensorFlow, and extraction runs under either backend.

Keras picks its backend at import, so the JAX side runs in one subprocess
(KERAS_BACKEND=jax) for the module:
- the same random weights (every variable, batch-norm statistics included) and
  the same clips go through a SegmentEncoder of InceptionI3d, and its pooled
  features and logits must match this process's within float32 tolerance;
- beam_pipeline.extract with the Kinetics-400 weights (Beam's default worker
  threads, two of them encoding at once) must give the features this process
  extracts from the same video.
"""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from video_helpers import smooth_frames, write_video
from wtal_tf import contract
from wtal_tf.config import ExtractConfig
from wtal_tf.features import beam_pipeline as pipeline
from wtal_tf.features import i3d

REPO = pathlib.Path(__file__).resolve().parents[1]
CLIP = (2, i3d.SEGMENT_FRAMES, 32, 32, 3)  # two tiny RGB clips [N, T, H, W, C]
# Small frames, and a chunk per segment on two worker threads: chunks encoded at once
# (Keras's predict_on_batch, shared by the threads, crashed under JAX: a new user found it).
EXTRACT = {"streams": ("rgb",), "resize_shorter": 40, "crop_size": 32, "chunk_segments": 1,
           "pipeline_args": ("--direct_num_workers=2",)}

# Runs in the subprocess: argv = weights .npz, clips .npy, output .npz, video dir, OUT.
CHILD = """
import sys
import keras
import numpy as np
from wtal_tf.config import ExtractConfig
from wtal_tf.features import beam_pipeline, encoder, i3d
assert keras.backend.backend() == "jax", keras.backend.backend()
weights = np.load(sys.argv[1])
seeded = i3d.InceptionI3d(3, seed=0, name="inception_i3d_rgb")  # random weights, seed 0
model = i3d.InceptionI3d(3, random_init=False, name="inception_i3d_rgb")  # overwritten next
names = [w.path for w in model.weights]
assert names == list(weights["names"]), "variable order differs"
model.set_weights([weights[f"w{k}"] for k in range(len(names))])
clips = np.load(sys.argv[2])
encode = encoder.SegmentEncoder("rgb", model)
features = encode(clips)
# another batch size (compiled again): the same clip's features
np.testing.assert_allclose(encode(clips[:1]), features[:1], rtol=1e-5, atol=1e-6)
np.savez(sys.argv[3], features=features, logits=encode.logits(features),
         **{f"seeded{k}": keras.ops.convert_to_numpy(w) for k, w in enumerate(seeded.weights)})
beam_pipeline.extract(ExtractConfig(video_dir=sys.argv[4], output_dir=sys.argv[5], **%r))
""" % (EXTRACT,)


@pytest.fixture(scope="module")
def random_weights():
  """(model, its variable values): conv kernels from the seeded initialiser, batch-norm
  statistics and offsets random."""
  rng = np.random.default_rng(0)
  model = i3d.InceptionI3d(3, seed=0, name="inception_i3d_rgb")
  values = []
  for w, v in zip(model.weights, model.get_weights()):
    if w.path.endswith("moving_variance"):
      v = rng.uniform(0.5, 1.5, v.shape)
    elif w.path.endswith(("moving_mean", "beta", "bias")):
      v = rng.normal(0, 0.1, v.shape)
    values.append(np.asarray(v, np.float32))
  model.set_weights(values)
  return model, values


@pytest.fixture(scope="module")
def jax_run(random_weights, tmp_path_factory):
  """The JAX subprocess's results: (its encoder outputs .npz, the clips, the video dir, its
  OUT)."""
  if keras.backend.backend() != "tensorflow":
    pytest.skip("the TensorFlow run starts the JAX one")
  pytest.importorskip("jax")
  root = tmp_path_factory.mktemp("backends")
  model, values = random_weights
  np.savez(root / "weights.npz", names=np.array([w.path for w in model.weights]),
           **{f"w{k}": v for k, v in enumerate(values)})
  clips = np.random.default_rng(1).uniform(-1, 1, CLIP).astype(np.float32)
  np.save(root / "clips.npy", clips)
  videos = root / "videos"
  videos.mkdir()
  write_video(videos / "a.mkv", smooth_frames(4 * contract.SEGMENT_FRAMES + 6, 48, 64, seed=0))
  env = {**os.environ, "KERAS_BACKEND": "jax",
         "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
  proc = subprocess.run([sys.executable, "-c", CHILD, str(root / "weights.npz"),
                         str(root / "clips.npy"), str(root / "jax.npz"), str(videos),
                         str(root / "out_jax")],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return np.load(root / "jax.npz"), clips, videos, root / "out_jax"


def test_inception_i3d_same_under_jax_and_tensorflow(random_weights, jax_run):
  model, _ = random_weights
  other, clips, _, _ = jax_run
  features = keras.ops.convert_to_numpy(model(clips, training=False))
  logits = keras.ops.convert_to_numpy(model.logits(features))
  assert features.shape == (2, contract.FEATURE_DIM)
  assert logits.shape == (2, i3d.NUM_KINETICS_CLASSES)
  assert np.abs(features).max() > 1e-3 and (features > 0).mean() > 0.1  # not a dead network
  np.testing.assert_allclose(other["features"], features, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(other["logits"], logits, rtol=1e-4, atol=1e-4)


def test_random_weights_of_a_seed_are_the_same_under_jax_and_tensorflow(jax_run):
  """--random_init_seed names its weights random-numpy:<seed> whatever the backend: Keras's
  own initialisers gave other weights under JAX than under TensorFlow."""
  other, _, _, _ = jax_run
  mine = [w.numpy() for w in i3d.InceptionI3d(3, seed=0, name="inception_i3d_rgb").weights]
  theirs = [other[f"seeded{k}"] for k in range(sum(n.startswith("seeded") for n in other))]
  assert len(theirs) == len(mine) > 100
  for a, b in zip(theirs, mine):
    np.testing.assert_array_equal(a, b)
  assert np.abs(mine[0]).max() > 0.01  # random kernels, not zeros


def test_extraction_under_jax_gives_the_features_of_tensorflow(jax_run, tmp_path):
  _, _, videos, jax_out = jax_run
  pipeline.extract(ExtractConfig(video_dir=str(videos), output_dir=str(tmp_path), **EXTRACT))
  mine, other = (np.load(contract.feature_path(str(out), "test", "rgb", "a"))
                 for out in (tmp_path, jax_out))
  assert mine.shape == (4, contract.FEATURE_DIM) and np.abs(mine).max() > 1
  np.testing.assert_allclose(other, mine, rtol=1e-5, atol=1e-4)
