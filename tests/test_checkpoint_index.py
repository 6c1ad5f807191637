"""checkpoint_index reads a TF checkpoint's index as TensorFlow does, without TensorFlow;
weights.check_deepmind_checkpoint (the extract driver's check) refuses what the workers'
TensorFlow loader refuses, with the same line, except a changed byte inside a tensor,
which only TensorFlow's checksum finds."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tf1_checkpoint import write_tf1_checkpoint
from wtal_tf.errors import UserError
from wtal_tf.features import checkpoint_index as CI
from wtal_tf.features import i3d_weights
from wtal_tf.features import weights as W

MANY = 5000  # tensors with long names: an index of several data blocks (256 KiB each)
LONG_NAME = 90  # characters after each name's distinct part


def assert_index_matches_tensorflow(path: str) -> CI.Index:
  """Names, dtypes and shapes as TensorFlow's reader lists them, and each numeric tensor's
  bytes, where the index says they lie, equal to the tensor TensorFlow reads (a TF2
  checkpoint's object graph is a string tensor, stored in another encoding)."""
  prefix = CI.prefix_of(path)
  index = CI.read(prefix)
  reader = tf.train.load_checkpoint(path)
  shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
  assert index.entries.keys() == shapes.keys()
  for name, entry in index.entries.items():
    assert list(entry.shape) == shapes[name] and entry.dtype == dtypes[name].as_datatype_enum
    if dtypes[name] == tf.string:
      continue
    with open(CI.data_file(prefix, entry.shard, index.num_shards), "rb") as f:
      f.seek(entry.offset)
      raw = f.read(entry.size)
    np.testing.assert_array_equal(
        np.frombuffer(raw, dtypes[name].as_numpy_dtype).reshape(entry.shape),
        reader.get_tensor(name))
  return index


def save_v2(prefix: str, tensors: dict) -> str:
  os.makedirs(os.path.dirname(prefix), exist_ok=True)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors),
                    shape_and_slices=[""] * len(tensors), tensors=list(tensors.values()))
  return prefix


def flow_variables(seed=0, extra=()) -> dict:
  """A few variables under DeepMind's flow scope, in Sonnet v1's shapes."""
  rng = np.random.default_rng(seed)
  scope = W.DEEPMIND_SCOPES["flow"]
  out = {scope + "Conv3d_1a_7x7/conv_3d/w": rng.standard_normal((7, 7, 7, 2, 8)),
         scope + "Conv3d_1a_7x7/batch_norm/beta": rng.standard_normal((1, 1, 1, 1, 8)),
         scope + "Logits/Conv3d_0c_1x1/conv_3d/b": rng.standard_normal(4)}
  out.update({name: rng.standard_normal(3) for name in extra})
  return {k: v.astype(np.float32) for k, v in out.items()}


def test_a_tf1_saver_checkpoint_and_its_folder(tmp_path):
  prefix = write_tf1_checkpoint(tmp_path / "ckpt", flow_variables())
  index = assert_index_matches_tensorflow(prefix)
  assert index.num_shards == 1 and len(index.entries) == 3
  assert CI.prefix_of(str(tmp_path / "ckpt")) == prefix  # as tf.train.latest_checkpoint
  assert_index_matches_tensorflow(str(tmp_path / "ckpt"))


def test_many_tensors_of_several_dtypes_over_several_blocks(tmp_path):
  rng = np.random.default_rng(1)
  tensors = {f"scope_{k:05d}/" + "x" * LONG_NAME:
             tf.constant(k, tf.int64) if k % 3 == 0
             else tf.constant(rng.standard_normal(k % 4).astype(np.float32))
             for k in range(MANY)}
  prefix = save_v2(str(tmp_path / "many" / "m"), tensors)
  assert os.path.getsize(prefix + ".index") > 2 * 262144  # more than two data blocks
  assert len(assert_index_matches_tensorflow(prefix).entries) == MANY


def test_a_checkpoint_of_two_shards_and_a_tf2_folder(tmp_path):
  one = save_v2(str(tmp_path / "s" / "one"), {"a/w": tf.ones((4, 5)), "a/b": tf.zeros((0, 3))})
  two = save_v2(str(tmp_path / "s" / "two"), {"b/w": tf.fill((2, 2, 2), 7.0)})
  merged = str(tmp_path / "s" / "merged")
  tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=[one, two], destination_prefix=merged)
  index = assert_index_matches_tensorflow(merged)
  assert index.num_shards == 2 and index.entries["b/w"].shard == 1
  assert os.path.isfile(CI.data_file(merged, 1, 2))
  checkpoint = tf.train.Checkpoint(v=tf.Variable(np.arange(12.0).reshape(3, 4)))
  checkpoint.save(str(tmp_path / "tf2" / "ckpt"))
  folder = str(tmp_path / "tf2")
  assert CI.prefix_of(folder) == tf.train.latest_checkpoint(folder)
  assert_index_matches_tensorflow(folder)


def test_what_is_not_an_index_is_refused(tmp_path):
  prefix = write_tf1_checkpoint(tmp_path / "ckpt", flow_variables())
  table = open(prefix + ".index", "rb").read()
  # The index block's trailer set to "snappy": its handle is the footer's second one.
  footer = table[-CI.FOOTER_BYTES:]
  _, pos = CI._varint(footer, 0)  # pylint: disable=protected-access
  _, pos = CI._varint(footer, pos)  # pylint: disable=protected-access
  offset, pos = CI._varint(footer, pos)  # pylint: disable=protected-access
  size, _ = CI._varint(footer, pos)  # pylint: disable=protected-access
  cases = {"garbage": (b"not a checkpoint index" * 10, "no table footer"),
           "cut": (table[:len(table) // 2], "no table footer"),
           "compressed": (table[:offset + size] + b"\x01" + table[offset + size + 1:],
                          "a block of compression type 1")}
  for name, (content, reason) in cases.items():
    bad = tmp_path / name / "model.ckpt"
    bad.parent.mkdir()
    (tmp_path / name / "model.ckpt.index").write_bytes(content)
    with pytest.raises(CI.CheckpointFormatError, match=reason):
      CI.read(str(bad))
  with pytest.raises(CI.CheckpointFormatError, match="without a readable checkpoint file"):
    CI.prefix_of(str(tmp_path / "garbage"))


def refusals(path: str) -> tuple[str, str]:
  """(the driver's check's line, the workers' loader's line) for the flow checkpoint."""
  lines = []
  for refuse in (W.check_deepmind_checkpoint, i3d_weights.load_deepmind_checkpoint):
    with pytest.raises(UserError) as e:
      refuse(path, "flow")
    assert "\n" not in str(e.value)
    lines.append(str(e.value))
  return lines[0], lines[1]


def test_the_driver_refuses_what_the_workers_refuse(tmp_path):
  good = write_tf1_checkpoint(tmp_path / "good", flow_variables())
  W.check_deepmind_checkpoint(good, "flow")
  W.check_deepmind_checkpoint(str(tmp_path / "good"), "flow")
  scope = W.DEEPMIND_SCOPES["flow"]

  truncated = write_tf1_checkpoint(tmp_path / "truncated", flow_variables())
  data = truncated + ".data-00000-of-00001"
  with open(data, "r+b") as f:
    f.truncate(os.path.getsize(data) // 2)
  driver, worker = refusals(truncated)
  same = re.escape(f"{data}: cannot read variable {scope}")
  assert re.match(same + r".*, truncated or corrupt\? \(its bytes end at \d+, the file has "
                  rf"{os.path.getsize(data)}\)$", driver)
  assert re.match(same + r".*, truncated or corrupt\? \(", worker)

  missing_data = write_tf1_checkpoint(tmp_path / "no_data", flow_variables())
  os.remove(missing_data + ".data-00000-of-00001")
  driver, _ = refusals(missing_data)
  assert driver.endswith("truncated or corrupt? (the data file is missing)")

  rgb = write_tf1_checkpoint(tmp_path / "rgb", {
      W.DEEPMIND_SCOPES["rgb"] + "Conv3d_1a_7x7/conv_3d/w": np.zeros(3, np.float32)})
  unknown = write_tf1_checkpoint(tmp_path / "unknown", flow_variables(
      extra=[scope + "Conv3d_1a_7x7/conv_3d/w_ema"]))
  for path, expected in (
      (rgb, f"{rgb}: no variables under {scope} (the flow stream); found scopes: "
            "RGB/inception_i3d"),
      (unknown, f"{unknown}: 1 unexpected variable(s), e.g. {scope}Conv3d_1a_7x7/conv_3d/w_ema"),
      (str(tmp_path / "absent" / "model.ckpt"), None),
      (str(tmp_path / "empty_folder"), None)):
    os.makedirs(tmp_path / "empty_folder", exist_ok=True)
    driver, worker = refusals(path)
    if expected is None:
      assert driver.startswith(f"{path}: cannot read the flow TF checkpoint (")
      assert worker.startswith(f"{path}: cannot read the flow TF checkpoint (")
    else:
      assert driver == worker == expected


def test_a_changed_byte_in_a_tensor_is_found_by_the_workers_checksum(tmp_path):
  prefix = write_tf1_checkpoint(tmp_path / "flipped", flow_variables())
  data = prefix + ".data-00000-of-00001"
  with open(data, "r+b") as f:
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 0xFF]))
  W.check_deepmind_checkpoint(prefix, "flow")  # the structure is intact
  with pytest.raises(UserError, match=rf"^{re.escape(data)}: cannot read variable .*"
                                      r"truncated or corrupt\?"):
    i3d_weights.load_deepmind_checkpoint(prefix, "flow")
