"""checkpoint_index reads a TF checkpoint's index as TensorFlow does, without TensorFlow;
weights.check_deepmind_checkpoint (the extract driver's check) refuses what the workers'
TensorFlow loader refuses, naming the same file and variable, except a changed byte
inside a tensor, which only TensorFlow's checksum of the tensor finds."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import frameworks_loaded_by
from tf1_checkpoint import write_tf1_checkpoint
from wtal_tf.config import ExtractConfig
from wtal_tf.errors import UserError
from wtal_tf.features import checkpoint_index as CI
from wtal_tf.features import i3d_weights
from wtal_tf.features import weights as W

MANY = 5000  # tensors with long names: an index of several data blocks (256 KiB each)
LONG_NAME = 90  # characters after each name's distinct part
MUTATIONS = 300  # damaged copies of an index, each read once


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
    if dtypes[name] == tf.string or entry.sliced:  # a partitioned variable: in its slices
      continue
    assert entry.size == entry.expected_size()
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


def test_a_partitioned_variable_is_listed_once_whole(tmp_path):
  whole = np.arange(20, dtype=np.float32).reshape(4, 5)
  prefix = str(tmp_path / "sliced" / "m")
  os.makedirs(os.path.dirname(prefix))
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["p", "p", "q"],
                    shape_and_slices=["4 5 0,2:-", "4 5 2,2:-", ""],
                    tensors=[whole[:2], whole[2:], tf.ones(3)])
  index = assert_index_matches_tensorflow(prefix)
  assert index.entries.keys() == {"p", "q"}
  assert index.entries["p"].sliced and index.entries["p"].expected_size() is None
  np.testing.assert_array_equal(tf.train.load_checkpoint(prefix).get_tensor("p"), whole)


def test_crc32c_and_the_checkpoint_file_of_a_folder(tmp_path):
  assert CI.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
  folder = tmp_path / "f"
  folder.mkdir()
  for text, expected in (
      ('model_checkpoint_path: "model.ckpt-7"\n', "model.ckpt-7"),
      ("  model_checkpoint_path : 'caf\\303\\251'\nall_model_checkpoint_paths: 'x'\n", "café"),
      ('model_checkpoint_path: "a"\nmodel_checkpoint_path: "b\\\\c"\n', "b\\c"),
      ('model_checkpoint_path: "/abs/m"\n', "/abs/m")):
    (folder / CI.STATE_FILE).write_text(text)
    assert CI.prefix_of(str(folder)) == os.path.join(str(folder), expected)
  for text, reason in (("all_model_checkpoint_paths: 'x'\n", "names no model_checkpoint_path"),
                       ('model_checkpoint_path: "a\\000b"\n', "is not a path"),
                       ('model_checkpoint_path: "a\\xZZ"\n', "unreadable")):
    (folder / CI.STATE_FILE).write_text(text)
    with pytest.raises(CI.CheckpointFormatError, match=reason):
      CI.prefix_of(str(folder))


def test_what_is_not_an_index_is_refused(tmp_path):
  prefix = write_tf1_checkpoint(tmp_path / "ckpt", flow_variables())
  table = open(prefix + ".index", "rb").read()
  # The index block: a byte flipped, and its trailer's type set to "snappy" with the
  # checksum LevelDB would store for that.
  handle = CI.index_handle(table)
  offset, pos = CI._varint(handle, 0)  # pylint: disable=protected-access
  size, _ = CI._varint(handle, pos)  # pylint: disable=protected-access
  flipped = bytearray(table)
  flipped[offset + 3] ^= 0xFF
  crc = CI.crc32c(table[offset:offset + size] + b"\x01")
  masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + CI.CRC_MASK_DELTA) & 0xFFFFFFFF
  snappy = (table[:offset + size] + b"\x01" + masked.to_bytes(4, "little")
            + table[offset + size + CI.BLOCK_TRAILER_BYTES:])
  cases = {"garbage": (b"not a checkpoint index" * 10, "no table footer"),
           "cut": (table[:len(table) // 2], "no table footer"),
           "flipped": (bytes(flipped), "checksum does not match"),
           "type": (table[:offset + size] + b"\x01" + table[offset + size + 1:],
                    "checksum does not match"),
           "snappy": (snappy, "a block of compression type 1")}
  for name, (content, reason) in cases.items():
    bad = tmp_path / name / "model.ckpt"
    bad.parent.mkdir()
    (tmp_path / name / "model.ckpt.index").write_bytes(content)
    with pytest.raises(CI.CheckpointFormatError, match=reason):
      CI.read(str(bad))
  with pytest.raises(CI.CheckpointFormatError, match="without a readable checkpoint file"):
    CI.prefix_of(str(tmp_path / "garbage"))
  with pytest.raises(CI.CheckpointFormatError, match="reads TensorFlow's V2 checkpoints"):
    CI.read(str(tmp_path / "absent"))


def test_entries_and_messages_that_run_short_are_refused():
  # pylint: disable=protected-access
  restarts = (0).to_bytes(4, "little") + (1).to_bytes(4, "little")  # one restart at 0
  one = bytes([0, 1, 2]) + b"k" + b"vv"  # shares 0 key bytes, 1 new, a 2-byte value
  assert list(CI._entries(one + restarts)) == [(b"k", b"vv")]
  for block, reason in ((bytes([5, 1, 0]) + b"k" + restarts, "runs past its block"),
                        (bytes([0, 1, 9]) + b"kv" + restarts, "runs past its block"),
                        (b"\x01\x02", "shorter than its restart count")):
    with pytest.raises(CI.CheckpointFormatError, match=reason):
      list(CI._entries(block))
  assert list(CI._fields(bytes([0x08, 0x96, 0x01, 0x12, 0x01, 0x41]))) == [(1, 150), (2, b"A")]
  for message in (bytes([0x12, 0x05, 0x41]), bytes([0x0D, 0x01, 0x02]), bytes([0x08, 0x96]),
                  bytes([0x0B])):  # cut bytes, cut fixed32, cut varint, wire type 3
    with pytest.raises(CI.CheckpointFormatError):
      list(CI._fields(message))


def test_damaged_indexes_fail_only_with_a_format_error(tmp_path):
  """Random flips, cuts and insertions, in the file (most fail its blocks' checksums)
  and in a block's entries and messages behind the checksum: nothing else is raised."""
  prefix = write_tf1_checkpoint(tmp_path / "ckpt", flow_variables())
  table = open(prefix + ".index", "rb").read()
  # pylint: disable-next=protected-access
  handle = next(CI._entries(CI._block(table, CI.index_handle(table))))[1]
  block = CI._block(table, handle)  # pylint: disable=protected-access
  rng = np.random.default_rng(0)

  def damaged(data: bytes) -> bytes:
    at = int(rng.integers(len(data)))
    kind = rng.integers(3)
    if kind == 0:
      return data[:at] + bytes([data[at] ^ int(rng.integers(1, 256))]) + data[at + 1:]
    if kind == 1:
      return data[:at] + data[at + int(rng.integers(1, 9)):]
    return data[:at] + bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8)) \
        + data[at:]

  bad = tmp_path / "bad" / "model.ckpt"
  bad.parent.mkdir()
  refused = 0
  for _ in range(MUTATIONS):
    (tmp_path / "bad" / "model.ckpt.index").write_bytes(damaged(table))
    try:  # some bytes change nothing read (the footer's padding, the metaindex block)
      CI.read(str(bad))
    except CI.CheckpointFormatError:
      refused += 1
    try:  # pylint: disable=protected-access
      [CI._entry(value) for key, value in CI._entries(damaged(block)) if key]
    except CI.CheckpointFormatError:
      pass
  assert refused > MUTATIONS // 2


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
  data = missing_data + ".data-00000-of-00001"
  os.remove(data)
  driver, worker = refusals(missing_data)
  assert driver.endswith("truncated or corrupt? (the data file is missing)")
  assert driver.split(" (")[0] == worker.split(" (")[0]  # the file and the variable
  assert driver.startswith(f"{data}: cannot read variable {scope}")

  rgb = write_tf1_checkpoint(tmp_path / "rgb", {
      W.DEEPMIND_SCOPES["rgb"] + "Conv3d_1a_7x7/conv_3d/w": np.zeros(3, np.float32)})
  unknown = write_tf1_checkpoint(tmp_path / "unknown", flow_variables(
      extra=[scope + "Conv3d_1a_7x7/conv_3d/w_ema"]))
  for path, expected in (
      (rgb, f"{rgb}: no variables under {scope} (the flow stream); found scopes: "
            "RGB/inception_i3d"),
      (unknown, f"{unknown}: 1 unexpected variable(s): {scope}Conv3d_1a_7x7/conv_3d/w_ema"),
      (str(tmp_path / "absent" / "model.ckpt"), None),
      (str(tmp_path / "empty_folder"), None)):
    os.makedirs(tmp_path / "empty_folder", exist_ok=True)
    driver, worker = refusals(path)
    if expected is None:
      assert driver.startswith(f"{path}: cannot read the flow TF checkpoint (")
      assert worker.startswith(f"{path}: cannot read the flow TF checkpoint (")
      assert ("reads TensorFlow's V2 checkpoints" in driver if "absent" in path
              else "without a readable checkpoint file" in driver), driver
    else:
      assert driver == worker == expected


def test_the_driver_checks_a_checkpoint_without_tensorflow(tmp_path):
  prefix = write_tf1_checkpoint(tmp_path / "ckpt", flow_variables())
  cfg = ExtractConfig(streams=("flow",), flow_checkpoint=prefix)
  check = (f"weights.check_weights(ExtractConfig(streams=('flow',), flow_checkpoint={prefix!r}),"
           " ('flow',))")
  assert frameworks_loaded_by(["wtal_tf.config", "wtal_tf.features.weights"], then=(
      "from wtal_tf.config import ExtractConfig\nfrom wtal_tf.features import weights\n"
      + check)) == []
  W.check_weights(cfg, cfg.streams)  # and the same check here passes


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
