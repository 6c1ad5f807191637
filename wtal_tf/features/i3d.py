"""Inflated Inception-v1 (I3D) of Carreira & Zisserman (CVPR 2017) in Keras.

The architecture of DeepMind's kinetics-i3d: Unit3D = Conv3D (no bias, SAME)
-> batch norm (offset only, epsilon 1e-3, inference statistics) -> ReLU; the
Inception modules Mixed_3b ... Mixed_5c with a 3x3x3 max-pool branch; the pools
of the original. The feature of one 16-frame segment is the Mixed_5c output
averaged over time and space (1024-d). The Kinetics-400 logits
`Logits/Conv3d_0c_1x1` (a 1x1x1 conv with bias) act on that pooled feature.

The layer classes (Unit3D, MixedModule, InceptionI3d) use keras layers and
keras.ops only, so they run under any Keras backend (TensorFlow, JAX);
features.encoder compiles them with TensorFlow's tf.function under that backend,
with Keras's own compiled prediction under another.

Every unit has a canonical path (`InceptionI3d.units()`), e.g.
"Mixed_3b/Branch_1/Conv3d_0b_3x3", which `wtal_tf.features.weights` maps
checkpoint variables onto.
"""

from typing import Sequence

import keras
import numpy as np

from wtal_tf.contract import SEGMENT_FRAMES

NUM_KINETICS_CLASSES = 400     # outputs of the Kinetics-400 logits
STREAM_CHANNELS = {"rgb": 3, "flow": 2}
BATCH_NORM_EPSILON = 1e-3      # Sonnet v1 BatchNorm's default, as in kinetics-i3d

# (name, (branch_0, branch_1a, branch_1b, branch_2a, branch_2b, branch_3)) output channels.
MIXED_CHANNELS = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)
# Max pools before a block: name, ksize (t, h, w), strides (t, h, w); all SAME.
POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
POOL_BEFORE = {"Mixed_4b": "MaxPool3d_4a_3x3", "Mixed_5b": "MaxPool3d_5a_2x2"}  # between modules
LOGITS_PATH = "Logits/Conv3d_0c_1x1"


MODEL_SEED_STRIDE = 1000  # random init: a model seed's blocks take seeds from seed * this
BLOCK_SEED_STRIDE = 10  # ... in steps of this (more than a Mixed module's 6 units)
LOGITS_BLOCK = 99  # the logits unit's block number (after the stem's 3 and 9 Mixed modules)
HE_TRUNCATION = 2.0            # He-normal draws beyond this many standard deviations are redrawn
HE_STDDEV_CORRECTION = .87962566103423978  # std of a unit normal truncated at +-2 (Keras's)


def _keras_name(path: str) -> str:
  return path.replace("/", "_")  # Keras layer names may not contain "/"


@keras.saving.register_keras_serializable("wtal_tf")
class SeededHeNormal(keras.initializers.Initializer):
  """He-normal kernels (Keras's HeNormal: a normal truncated at 2 std, std sqrt(2 / fan_in))
  drawn from numpy's generator, so one seed gives the same random weights under every Keras
  backend: Keras's own initialisers draw from the backend's generator, and a seed gives
  other weights under JAX than under TensorFlow. seed None: other weights each time."""

  def __init__(self, seed: int | None = None):
    self.seed = seed

  def __call__(self, shape, dtype=None):
    rng = np.random.default_rng(self.seed)
    fan_in = int(np.prod(shape[:-1]))  # [..., in, out]: receptive field x input channels
    values = rng.standard_normal(shape)
    while np.any(out := np.abs(values) > HE_TRUNCATION):
      values[out] = rng.standard_normal(int(out.sum()))
    std = np.sqrt(2.0 / max(fan_in, 1)) / HE_STDDEV_CORRECTION
    return keras.ops.convert_to_tensor((values * std).astype(dtype or "float32"))

  def get_config(self):
    return {"seed": self.seed}


@keras.saving.register_keras_serializable("wtal_tf")
class Unit3D(keras.layers.Layer):
  """Conv3D (SAME) -> batch norm (no scale, inference statistics) -> ReLU.

  With use_batch_norm=False, use_bias=True, activation=False it is the logits
  unit: a plain convolution with bias.
  """

  def __init__(self, output_channels: int, kernel_shape: Sequence[int] = (1, 1, 1),
               stride: Sequence[int] = (1, 1, 1), use_batch_norm: bool = True,
               use_bias: bool = False, activation: bool = True, seed: int | None = None,
               random_init: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.output_channels = int(output_channels)
    self.kernel_shape = tuple(int(k) for k in kernel_shape)
    self.stride = tuple(int(s) for s in stride)
    self.use_batch_norm, self.use_bias, self.activation = use_batch_norm, use_bias, activation
    self.seed, self.random_init = seed, random_init
    self.conv = keras.layers.Conv3D(
        self.output_channels, self.kernel_shape, strides=self.stride, padding="same",
        use_bias=use_bias,
        kernel_initializer=SeededHeNormal(seed) if random_init else "zeros",
        name="conv_3d")
    self.bn = (keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, center=True,
                                               scale=False, name="batch_norm")
               if use_batch_norm else None)

  def build(self, input_shape):
    self.conv.build(input_shape)
    if self.bn is not None:
      self.bn.build(tuple(input_shape[:-1]) + (self.output_channels,))

  def call(self, x):
    """x: [N, T, H, W, C_in] -> [N, T', H', W', output_channels]."""
    x = self.conv(x)
    if self.bn is not None:
      x = self.bn(x, training=False)  # inference statistics always
    if self.activation:
      x = keras.ops.relu(x)
    return x

  def get_config(self):
    return {**super().get_config(), "output_channels": self.output_channels,
            "kernel_shape": list(self.kernel_shape), "stride": list(self.stride),
            "use_batch_norm": self.use_batch_norm, "use_bias": self.use_bias,
            "activation": self.activation, "seed": self.seed, "random_init": self.random_init}


# Branch unit names inside a Mixed module, in the order of MIXED_CHANNELS' tuples.
MIXED_UNITS = (
    ("Branch_0/Conv3d_0a_1x1", (1, 1, 1)),
    ("Branch_1/Conv3d_0a_1x1", (1, 1, 1)),
    ("Branch_1/Conv3d_0b_3x3", (3, 3, 3)),
    ("Branch_2/Conv3d_0a_1x1", (1, 1, 1)),
    ("Branch_2/Conv3d_0b_3x3", (3, 3, 3)),
    ("Branch_3/Conv3d_0b_1x1", (1, 1, 1)),
)
MIXED_POOL = ((3, 3, 3), (1, 1, 1))  # Branch_3's MaxPool3d_0a_3x3: ksize, strides (SAME)


@keras.saving.register_keras_serializable("wtal_tf")
class MixedModule(keras.layers.Layer):
  """An Inception module: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | maxpool 3x3x3 -> 1x1."""

  def __init__(self, channels: Sequence[int], seed: int | None = None,
               random_init: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.channels = tuple(int(c) for c in channels)
    if len(self.channels) != len(MIXED_UNITS):
      raise ValueError(f"MixedModule needs {len(MIXED_UNITS)} channel counts, got {channels}")
    self.seed, self.random_init = seed, random_init
    self.branch_units = {
        path: Unit3D(c, kernel, seed=None if seed is None else seed + k,
                     random_init=random_init, name=_keras_name(path))
        for k, ((path, kernel), c) in enumerate(zip(MIXED_UNITS, self.channels))}
    self.pool = keras.layers.MaxPooling3D(MIXED_POOL[0], MIXED_POOL[1], padding="same",
                                          name="Branch_3_MaxPool3d_0a_3x3")

  @property
  def output_channels(self) -> int:
    return self.channels[0] + self.channels[2] + self.channels[4] + self.channels[5]

  def build(self, input_shape):
    u = self.branch_units
    for path in ("Branch_0/Conv3d_0a_1x1", "Branch_1/Conv3d_0a_1x1", "Branch_2/Conv3d_0a_1x1",
                 "Branch_3/Conv3d_0b_1x1"):
      u[path].build(input_shape)
    u["Branch_1/Conv3d_0b_3x3"].build(tuple(input_shape[:-1]) + (self.channels[1],))
    u["Branch_2/Conv3d_0b_3x3"].build(tuple(input_shape[:-1]) + (self.channels[3],))

  def call(self, x):
    """x: [N, T, H, W, C_in] -> [N, T, H, W, output_channels]."""
    u = self.branch_units
    b0 = u["Branch_0/Conv3d_0a_1x1"](x)
    b1 = u["Branch_1/Conv3d_0b_3x3"](u["Branch_1/Conv3d_0a_1x1"](x))
    b2 = u["Branch_2/Conv3d_0b_3x3"](u["Branch_2/Conv3d_0a_1x1"](x))
    b3 = u["Branch_3/Conv3d_0b_1x1"](self.pool(x))
    return keras.ops.concatenate([b0, b1, b2, b3], axis=-1)

  def get_config(self):
    return {**super().get_config(), "channels": list(self.channels), "seed": self.seed,
            "random_init": self.random_init}


@keras.saving.register_keras_serializable("wtal_tf")
class InceptionI3d(keras.Model):
  """I3D up to Mixed_5c, pooled to one FEATURE_DIM vector per clip, plus the logits unit."""

  def __init__(self, in_channels: int = 3, num_classes: int = NUM_KINETICS_CLASSES,
               seed: int | None = None, random_init: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.in_channels, self.num_classes, self.seed = int(in_channels), int(num_classes), seed
    self.random_init = random_init

    def s(k):  # the seed of the k-th block; a Mixed module's units take s(k) + 0..5
      return None if seed is None else seed * MODEL_SEED_STRIDE + k * BLOCK_SEED_STRIDE

    init = {"random_init": random_init}
    self.stem = {
        "Conv3d_1a_7x7": Unit3D(64, (7, 7, 7), (2, 2, 2), seed=s(0), name="Conv3d_1a_7x7",
                                **init),
        "Conv3d_2b_1x1": Unit3D(64, (1, 1, 1), seed=s(1), name="Conv3d_2b_1x1", **init),
        "Conv3d_2c_3x3": Unit3D(192, (3, 3, 3), seed=s(2), name="Conv3d_2c_3x3", **init),
    }
    self.pools = {name: keras.layers.MaxPooling3D(k, st, padding="same", name=name)
                  for name, (k, st) in POOLS.items()}
    self.mixed = {name: MixedModule(ch, seed=s(3 + k), name=name, **init)
                  for k, (name, ch) in enumerate(MIXED_CHANNELS)}
    self.logits_unit = Unit3D(num_classes, (1, 1, 1), use_batch_norm=False, use_bias=True,
                              activation=False, seed=s(LOGITS_BLOCK), name=_keras_name(LOGITS_PATH),
                              **init)
    self.build((None, SEGMENT_FRAMES, None, None, self.in_channels))

  def build(self, input_shape):
    # Variables depend on channel counts only: build unit by unit, no computation.
    def shape(c):
      return (None, None, None, None, c)
    channels = input_shape[-1]
    for unit in self.stem.values():
      unit.build(shape(channels))
      channels = unit.output_channels
    for module in self.mixed.values():
      module.build(shape(channels))
      channels = module.output_channels
    self.logits_unit.build(shape(channels))
    self.built = True

  def units(self) -> dict[str, Unit3D]:
    """Canonical path -> unit, e.g. "Mixed_5b/Branch_2/Conv3d_0b_3x3", "Logits/Conv3d_0c_1x1"."""
    out = dict(self.stem)
    for name, module in self.mixed.items():
      out.update({f"{name}/{path}": unit for path, unit in module.branch_units.items()})
    out[LOGITS_PATH] = self.logits_unit
    return out

  def call(self, clips):
    """clips: [N, T, H, W, C] in [-1, 1] -> Mixed_5c averaged over time and space [N, 1024]."""
    x = self.stem["Conv3d_1a_7x7"](clips)
    x = self.pools["MaxPool3d_2a_3x3"](x)
    x = self.stem["Conv3d_2c_3x3"](self.stem["Conv3d_2b_1x1"](x))
    x = self.pools["MaxPool3d_3a_3x3"](x)
    for name, module in self.mixed.items():
      if name in POOL_BEFORE:
        x = self.pools[POOL_BEFORE[name]](x)
      x = module(x)
    return keras.ops.mean(x, axis=(1, 2, 3))

  def logits(self, features):
    """features: [N, 1024] -> [N, num_classes] (the 1x1x1 logits conv on the pooled feature).

    For a 16-frame 224x224 clip Mixed_5c is 2x7x7, so the original's 2x7x7 VALID
    average pool followed by this conv and a mean over time is exactly this.
    """
    x = features[:, None, None, None, :]
    return self.logits_unit(x)[:, 0, 0, 0, :]

  def get_config(self):
    return {**super().get_config(), "in_channels": self.in_channels,
            "num_classes": self.num_classes, "seed": self.seed, "random_init": self.random_init}
