"""The index of a TensorFlow checkpoint, read without TensorFlow: each tensor's name,
dtype, shape and where its bytes lie.

The extract driver checks a DeepMind checkpoint with it before any work, so the
driver never imports TensorFlow (about 5 s of start-up and 600 MB). The workers
load the tensors with TensorFlow's reader, which also verifies each tensor's
checksum; this module reads structure only.

A checkpoint PREFIX in TensorFlow's V2 format (what TF1's Saver and TF2 write;
DeepMind's kinetics-i3d checkpoints are in it) is PREFIX.index with the data
files PREFIX.data-SSSSS-of-NNNNN. The index is a table in LevelDB's layout, as
TensorFlow's tensorflow/core/lib/io writes it:

  data blocks | metaindex block | index block | footer (FOOTER_BYTES)

Every block is followed by a trailer of BLOCK_TRAILER_BYTES (compression type,
checksum); the checkpoint writer stores its blocks uncompressed. A block is a
run of entries (varint32 key bytes shared with the previous key, varint32 key
bytes not shared, varint32 value bytes, the unshared key bytes, the value),
then uint32 restart offsets and their uint32 count. The footer holds the
metaindex's and the index block's handles (varint64 offset, varint64 size
each), zero padding and an 8-byte magic number. The index block maps keys to
the handles of the data blocks. In the data blocks, key "" holds a
BundleHeaderProto (field 1: num_shards) and every other key, a tensor's name,
a BundleEntryProto (1 dtype, 2 shape, 3 shard_id, 4 offset, 5 size, 6 crc32c,
7 slices); both are protobuf messages, decoded here field by field.
"""

import os
import re
from typing import Iterator, NamedTuple, Union

INDEX_EXT = ".index"
STATE_FILE = "checkpoint"  # a folder's text file naming its latest checkpoint
TABLE_MAGIC = 0xdb4775248b80fb57  # the last 8 bytes of a table, little-endian
FOOTER_BYTES = 48  # two block handles of at most 20 bytes each, padding, the magic
BLOCK_TRAILER_BYTES = 5  # after each block: 1 byte compression type, 4 bytes checksum
UNCOMPRESSED = 0  # the compression type of every block the checkpoint writer stores
HEADER_KEY = b""  # the key of the BundleHeaderProto
SLICE_KEY_START = b"\x00"  # keys of partitioned variables' slices start with a zero byte
UINT32_BYTES = 4
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5  # protobuf wire types
_STATE_PATH = re.compile(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', re.MULTILINE)


class CheckpointFormatError(ValueError):
  """The file is not a checkpoint index this module can read."""


class Entry(NamedTuple):
  dtype: int  # TensorFlow's DataType enum (1: float32)
  shape: tuple[int, ...]
  shard: int  # the data file that holds it
  offset: int  # where its bytes start in that file
  size: int  # how many bytes


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
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise CheckpointFormatError(f"a folder without a readable {STATE_FILE} file "
                                f"({getattr(e, 'strerror', None) or e})") from None
  found = _STATE_PATH.search(text)
  if found is None:
    raise CheckpointFormatError(f"{state} names no model_checkpoint_path")
  name = re.sub(r"\\(.)", r"\1", found.group(1))
  return name if os.path.isabs(name) else os.path.join(path, name)


def data_file(prefix: str, shard: int, num_shards: int) -> str:
  """PREFIX.data-SSSSS-of-NNNNN."""
  return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def read(prefix: str) -> Index:
  """The index of the checkpoint at `prefix` (OSError if PREFIX.index cannot be read,
  CheckpointFormatError if it is not a checkpoint index)."""
  with open(prefix + INDEX_EXT, "rb") as f:
    table = f.read()
  if len(table) < FOOTER_BYTES or int.from_bytes(table[-8:], "little") != TABLE_MAGIC:
    raise CheckpointFormatError(f"{prefix}{INDEX_EXT} is not a checkpoint index (no table "
                                "footer)")
  footer = table[-FOOTER_BYTES:]
  _, pos = _varint(footer, 0)  # the metaindex block's handle: offset, size (unused)
  _, pos = _varint(footer, pos)
  num_shards, entries = None, {}
  for _, handle in _entries(_block(table, footer[pos:])):
    for key, value in _entries(_block(table, handle)):
      if key == HEADER_KEY:
        num_shards = _int_field(value, 1, default=0)
      elif not key.startswith(SLICE_KEY_START):
        entries[key.decode("utf-8", "replace")] = _entry(value)
  if not num_shards:
    raise CheckpointFormatError(f"{prefix}{INDEX_EXT} has no bundle header")
  return Index(num_shards, entries)


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
  if end + BLOCK_TRAILER_BYTES > len(table):
    raise CheckpointFormatError("a block runs past the end of the index")
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
    elif wire in (_FIXED64, _FIXED32):
      width = 8 if wire == _FIXED64 else 4
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


def _signed(value: int) -> int:
  """A varint's int64 value (-1, an unknown dimension, is written as 2**64 - 1)."""
  return value - (1 << 64) if value >= 1 << 63 else value


def _shape(message: bytes) -> tuple[int, ...]:
  """A TensorShapeProto's dimensions (field 2, each a Dim with its size in field 1)."""
  return tuple(_signed(_int_field(dim, 1, default=0)) for n, dim in _fields(message)
               if n == 2 and isinstance(dim, bytes))


def _entry(message: bytes) -> Entry:
  """A BundleEntryProto."""
  shape = ()
  for n, v in _fields(message):
    if n == 2:
      if not isinstance(v, bytes):
        raise CheckpointFormatError("a tensor shape that is not a message")
      shape = _shape(v)
  return Entry(dtype=_int_field(message, 1, 0), shape=shape,
               shard=_int_field(message, 3, 0), offset=_int_field(message, 4, 0),
               size=_int_field(message, 5, 0))
