"""The index of a TensorFlow checkpoint, read without TensorFlow: each tensor's name,
dtype, shape and where its bytes lie.

The extract driver checks a DeepMind checkpoint with it before any work, so the
driver never imports TensorFlow (about 5 s of start-up and 600 MB). The workers
load the tensors with TensorFlow's reader, which also verifies each tensor's
checksum; this module reads the index only (its own checksums included).

A checkpoint PREFIX in TensorFlow's V2 format (what TF1's Saver and TF2 write;
DeepMind's kinetics-i3d checkpoints are in it) is PREFIX.index with the data
files PREFIX.data-SSSSS-of-NNNNN. The index is a table in LevelDB's layout, as
TensorFlow's tensorflow/core/lib/io writes it:

  data blocks | metaindex block | index block | footer (FOOTER_BYTES)

Every block is followed by a trailer of BLOCK_TRAILER_BYTES (compression type,
then the masked CRC32C of the block and that type byte, which is checked here as
TensorFlow's reader checks it); the checkpoint writer stores its blocks
uncompressed. A block is a
run of entries (varint32 key bytes shared with the previous key, varint32 key
bytes not shared, varint32 value bytes, the unshared key bytes, the value),
then uint32 restart offsets and their uint32 count. The footer holds the
metaindex's and the index block's handles (varint64 offset, varint64 size
each), zero padding and an 8-byte magic number. The index block maps keys to
the handles of the data blocks. In the data blocks, key "" holds a
BundleHeaderProto (field 1: num_shards) and every other key, a tensor's name,
a BundleEntryProto (1 dtype, 2 shape, 3 shard_id, 4 offset, 5 size, 6 crc32c,
7 slices); both are protobuf messages, decoded here field by field.

Only the V2 format is read (PREFIX.index beside the data files): TensorFlow has
written it since 1.0, and DeepMind's kinetics-i3d checkpoints are in it.
"""

import codecs
import math
import os
import re
from typing import Iterator, NamedTuple, Optional, Union

INDEX_EXT = ".index"
STATE_FILE = "checkpoint"  # a folder's text file naming its latest checkpoint
TABLE_MAGIC = 0xdb4775248b80fb57  # the last MAGIC_BYTES of a table, little-endian
MAGIC_BYTES = 8
MAX_HANDLE_BYTES = 20  # a block handle: two varint64s of at most 10 bytes each
FOOTER_BYTES = 2 * MAX_HANDLE_BYTES + MAGIC_BYTES  # two handles, zero padding, the magic
UINT32_BYTES = 4  # a fixed32: restart offsets and counts, checksums
BLOCK_TRAILER_BYTES = 1 + UINT32_BYTES  # after each block: compression type, checksum
UNCOMPRESSED = 0  # the compression type of every block the checkpoint writer stores
CRC32C_POLYNOMIAL = 0x82F63B78  # Castagnoli's, bit-reversed
CRC_MASK_DELTA = 0xA282EAD8  # LevelDB stores a CRC rotated right by 15 bits plus this
HEADER_KEY = b""  # the key of the BundleHeaderProto
SLICE_KEY_START = b"\x00"  # keys of partitioned variables' slices start with a zero byte
# Field numbers: BundleHeaderProto, BundleEntryProto, TensorShapeProto and its Dim.
HEADER_NUM_SHARDS = 1
ENTRY_DTYPE, ENTRY_SHAPE, ENTRY_SHARD, ENTRY_OFFSET, ENTRY_SIZE, ENTRY_SLICES = 1, 2, 3, 4, 5, 7
SHAPE_DIM, DIM_SIZE = 2, 1
# Bytes per element of TensorFlow's numeric DataType enum values (1: float32, 9: int64, ...).
DTYPE_BYTES = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 8: 8, 9: 8, 10: 1, 14: 2, 17: 2, 18: 16,
               19: 2, 22: 4, 23: 8}
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5  # protobuf wire types
_FIXED_BYTES = {_FIXED64: 8, _FIXED32: 4}  # bytes of protobuf's fixed-size wire types
# CheckpointState's text form, as protobuf's text parser takes it; the last one counts.
_STATE_PATH = re.compile(r"""^\s*model_checkpoint_path\s*:\s*
                             (?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)')""",
                         re.MULTILINE | re.VERBOSE)


class CheckpointFormatError(ValueError):
  """The file is not a checkpoint index this module can read."""


class Entry(NamedTuple):
  dtype: int  # TensorFlow's DataType enum (1: float32)
  shape: tuple[int, ...]
  shard: int  # the data file that holds it
  offset: int  # where its bytes start in that file
  size: int  # how many bytes
  sliced: bool = False  # a partitioned variable: its slices hold the bytes (size 0 here)

  def expected_size(self) -> Optional[int]:
    """The bytes a numeric tensor of this dtype and shape takes (None: not known here)."""
    if self.sliced or self.dtype not in DTYPE_BYTES:
      return None
    return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


class Index(NamedTuple):
  num_shards: int
  entries: dict[str, Entry]  # {tensor name: Entry}


def prefix_of(path: str) -> str:
  """The checkpoint prefix at `path`: `path` itself, or for a folder the checkpoint its
  STATE_FILE names, as tf.train.latest_checkpoint finds it."""
  if not os.path.isdir(path):
    return path
  state = os.path.join(path, STATE_FILE)
  try:
    with open(state, encoding="utf-8") as f:
      found = _STATE_PATH.findall(f.read())
    # The C escapes of protobuf's text form (\n, \303\251 for an octal UTF-8 byte, ...).
    name = codecs.escape_decode(max(found[-1], key=len).encode("utf-8"))[0].decode("utf-8")
  except OSError as e:
    raise CheckpointFormatError(f"a folder without a readable {STATE_FILE} file "
                                f"({e.strerror or e})") from None
  except IndexError:
    raise CheckpointFormatError(f"{state} names no model_checkpoint_path") from None
  except ValueError as e:  # a bad escape, not UTF-8
    raise CheckpointFormatError(f"{state}: unreadable model_checkpoint_path ({e})") from None
  if not name or "\0" in name:
    raise CheckpointFormatError(f"{state}: model_checkpoint_path {name!r} is not a path")
  return name if os.path.isabs(name) else os.path.join(path, name)


def data_file(prefix: str, shard: int, num_shards: int) -> str:
  """PREFIX.data-SSSSS-of-NNNNN."""
  return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def read(prefix: str) -> Index:
  """The index of the checkpoint at `prefix` (CheckpointFormatError if PREFIX.index is
  missing or not a V2 checkpoint index, OSError if it cannot be read otherwise)."""
  try:
    with open(prefix + INDEX_EXT, "rb") as f:
      table = f.read()
  except FileNotFoundError:
    raise CheckpointFormatError(f"no {prefix}{INDEX_EXT} (wtal_tf reads TensorFlow's V2 "
                                "checkpoints: PREFIX.index and PREFIX.data-*)") from None
  if len(table) < FOOTER_BYTES or (int.from_bytes(table[-MAGIC_BYTES:], "little")
                                   != TABLE_MAGIC):
    raise CheckpointFormatError(f"{prefix}{INDEX_EXT} is not a checkpoint index (no table "
                                "footer)")
  num_shards, entries = None, {}
  for _, handle in _entries(_block(table, index_handle(table))):
    for key, value in _entries(_block(table, handle)):
      if key == HEADER_KEY:
        num_shards = _int_field(value, HEADER_NUM_SHARDS, default=0)
      elif not key.startswith(SLICE_KEY_START):
        entries[key.decode("utf-8", "replace")] = _entry(value)
  if num_shards is None:
    raise CheckpointFormatError(f"{prefix}{INDEX_EXT} has no bundle header")
  if num_shards < 1:
    raise CheckpointFormatError(f"{prefix}{INDEX_EXT}: a bundle header of {num_shards} shards")
  beyond = [name for name, e in entries.items() if e.shard >= num_shards]
  if beyond:
    raise CheckpointFormatError(f"{prefix}{INDEX_EXT}: {beyond[0]} in shard "
                                f"{entries[beyond[0]].shard} of {num_shards}")
  return Index(num_shards, entries)


def index_handle(table: bytes) -> bytes:
  """The index block's handle: the footer's second, after the metaindex block's."""
  footer = table[-FOOTER_BYTES:]
  _, pos = _varint(footer, 0)  # the metaindex block's offset and size (unused)
  _, pos = _varint(footer, pos)
  return footer[pos:]


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`, as LevelDB and TensorFlow compute it."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _crc32c_table() -> list[int]:
  table = []
  for n in range(256):
    for _ in range(8):
      n = (n >> 1) ^ CRC32C_POLYNOMIAL if n & 1 else n >> 1
    table.append(n)
  return table


_CRC32C_TABLE = _crc32c_table()


def _unmask(crc: int) -> int:
  """A CRC as LevelDB stores it -> the CRC."""
  rotated = (crc - CRC_MASK_DELTA) & 0xFFFFFFFF
  return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


# ---------------------------------------------------------------- the table

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  """(the unsigned varint at buf[pos], the position after it)."""
  value = shift = 0
  while pos < len(buf) and shift < 64:
    byte = buf[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, pos
    shift += 7
  raise CheckpointFormatError("a varint runs past its block")


def _block(table: bytes, handle: bytes) -> bytes:
  """The block that `handle` (varint64 offset, varint64 size) points to in `table`."""
  offset, pos = _varint(handle, 0)
  size, _ = _varint(handle, pos)
  end = offset + size
  if end + BLOCK_TRAILER_BYTES > len(table) - FOOTER_BYTES:
    raise CheckpointFormatError("a block runs past the end of the index")
  stored = int.from_bytes(table[end + 1:end + BLOCK_TRAILER_BYTES], "little")
  if _unmask(stored) != crc32c(table[offset:end + 1]):  # the block and its type byte
    raise CheckpointFormatError("a block's checksum does not match: the index is corrupt")
  if table[end] != UNCOMPRESSED:
    raise CheckpointFormatError(f"a block of compression type {table[end]} (the checkpoint "
                                "writer stores them uncompressed)")
  return table[offset:end]


def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
  """(key, value) of each entry of a block, in order."""
  if len(block) < UINT32_BYTES:
    raise CheckpointFormatError("a block shorter than its restart count")
  restarts = int.from_bytes(block[-UINT32_BYTES:], "little")
  end = len(block) - UINT32_BYTES * (restarts + 1)
  if end < 0:
    raise CheckpointFormatError("a block shorter than its restart offsets")
  pos, key = 0, b""
  while pos < end:
    shared, pos = _varint(block, pos)
    unshared, pos = _varint(block, pos)
    length, pos = _varint(block, pos)
    if shared > len(key) or pos + unshared + length > end:
      raise CheckpointFormatError("an entry runs past its block")
    key = key[:shared] + block[pos:pos + unshared]
    pos += unshared
    yield key, block[pos:pos + length]
    pos += length


# ---------------------------------------------------------------- protobuf messages

def _fields(message: bytes) -> Iterator[tuple[int, Union[int, bytes]]]:
  """(field number, value) of each field of a protobuf message: an int for varint and
  fixed-size fields, bytes for length-delimited ones."""
  pos = 0
  while pos < len(message):
    key, pos = _varint(message, pos)
    number, wire = key >> 3, key & 7
    if wire == _VARINT:
      value, pos = _varint(message, pos)
    elif wire in _FIXED_BYTES:
      width = _FIXED_BYTES[wire]
      value, pos = int.from_bytes(message[pos:pos + width], "little"), pos + width
    elif wire == _BYTES:
      length, pos = _varint(message, pos)
      value, pos = message[pos:pos + length], pos + length
    else:
      raise CheckpointFormatError(f"a protobuf field of wire type {wire}")
    if pos > len(message):
      raise CheckpointFormatError("a protobuf message cut short")
    yield number, value


def _int_field(message: bytes, number: int, default: int) -> int:
  """The last value of integer field `number` (protobuf keeps the last), else `default`."""
  value = default
  for n, v in _fields(message):
    if n == number:
      if not isinstance(v, int):
        raise CheckpointFormatError(f"protobuf field {number} is not an integer")
      value = v
  return value


def _shape(message: bytes) -> tuple[int, ...]:
  """A TensorShapeProto's dimensions (a saved tensor's are all known, so non-negative)."""
  return tuple(_int_field(dim, DIM_SIZE, default=0) for n, dim in _fields(message)
               if n == SHAPE_DIM and isinstance(dim, bytes))


def _entry(message: bytes) -> Entry:
  """A BundleEntryProto."""
  shape, sliced = (), False
  for n, v in _fields(message):
    if n in (ENTRY_SHAPE, ENTRY_SLICES) and not isinstance(v, bytes):
      raise CheckpointFormatError(f"BundleEntryProto field {n} is not a message")
    if n == ENTRY_SHAPE:
      shape = _shape(v)
    sliced |= n == ENTRY_SLICES
  return Entry(dtype=_int_field(message, ENTRY_DTYPE, 0), shape=shape,
               shard=_int_field(message, ENTRY_SHARD, 0),
               offset=_int_field(message, ENTRY_OFFSET, 0),
               size=_int_field(message, ENTRY_SIZE, 0), sliced=sliced)
