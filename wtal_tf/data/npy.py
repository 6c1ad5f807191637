"""Reads plain numeric .npy (and .npz) files without `ast`, so it is safe in threads.

np.load parses the .npy header with ast.literal_eval. On CPython 3.11,
building AST objects in two threads at once (here: tf.data's parallel reads,
and autograph tracing in the main thread) can fail with "SystemError: AST
constructor recursion depth mismatch" (python/cpython#106905 and related);
it failed two of four runs of this project's test suite, and once an
extraction whose worker threads read earlier chunks (np.load of an .npz) and
headers. The header of a numeric array holds only three keys, so it is read
with a pattern instead.
"""

import io
import math
import re
import struct
import zipfile

import numpy as np

NPY_SUFFIX = ".npy"  # of an .npz archive's members
_HEADER_LENGTH = {1: ("<H", "latin1"), 2: ("<I", "latin1"), 3: ("<I", "utf8")}
_DESCR = re.compile(r"""['"]descr['"]\s*:\s*['"]([^'"]+)['"]""")
_FORTRAN = re.compile(r"""['"]fortran_order['"]\s*:\s*(True|False)""")
_SHAPE = re.compile(r"""['"]shape['"]\s*:\s*\(([\d\s,]*)\)""")


def read_header(f) -> tuple[np.dtype, tuple[int, ...], bool]:
  """(dtype, shape, Fortran order) of the .npy header at `f`'s position, which it leaves
  at the data; ValueError for anything but a numeric array's header."""
  major, minor = np.lib.format.read_magic(f)
  if major not in _HEADER_LENGTH:
    raise ValueError(f"unsupported .npy format version {major}.{minor}")
  size_format, encoding = _HEADER_LENGTH[major]
  size_bytes = f.read(struct.calcsize(size_format))
  if len(size_bytes) != struct.calcsize(size_format):
    raise ValueError("truncated .npy header")
  header = f.read(struct.unpack(size_format, size_bytes)[0]).decode(encoding)
  descr, fortran, shape = (p.search(header) for p in (_DESCR, _FORTRAN, _SHAPE))
  if not (descr and fortran and shape):
    raise ValueError(f"not a plain numeric array (header {header.strip()!r})")
  dtype = np.dtype(descr.group(1))
  if dtype.hasobject or dtype.fields is not None:
    raise ValueError(f"not a plain numeric array (dtype {dtype})")
  dims = tuple(int(x) for x in shape.group(1).split(",") if x.strip())
  return dtype, dims, fortran.group(1) == "True"


def read(path: str) -> np.ndarray:
  """The array in `path`; ValueError for anything but a numeric .npy (or a short file)."""
  with open(path, "rb") as f:
    return read_stream(f)


def read_stream(f) -> np.ndarray:
  """The array of the .npy at stream `f`'s position, read into a new array (not
  memory-mapped); ValueError as `read`'s."""
  dtype, dims, fortran = read_header(f)
  count = math.prod(dims)
  data = np.empty(count, dtype)
  got = f.readinto(data.view(np.uint8)) // dtype.itemsize if count else 0
  if got != count:
    raise ValueError(f"truncated data: {got} of {count} values")
  return data.reshape(dims, order="F" if fortran else "C")


def read_npz(data: bytes) -> dict[str, np.ndarray]:
  """{name: array} of an .npz archive's numeric arrays (np.savez's); ValueError for
  another kind of member, zipfile.BadZipFile for no archive."""
  with zipfile.ZipFile(io.BytesIO(data)) as archive:
    out = {}
    for member in archive.namelist():
      if not member.endswith(NPY_SUFFIX):
        raise ValueError(f"{member}: not a .npy member")
      with archive.open(member) as f:
        out[member[:-len(NPY_SUFFIX)]] = read_stream(f)
    return out
