"""The ast-free .npy reader against np.save/np.load."""

import ast

import numpy as np
import pytest

from wtal_tf.data import npy


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(12, dtype=np.float64).reshape(3, 4).T,  # Fortran order
    np.asfortranarray(np.arange(6, dtype=">f4").reshape(2, 3)),  # big-endian
    np.zeros((0, 5), np.float32),
    np.arange(5, dtype=np.int16),
    np.float32(3.5),  # 0-d
])
def test_matches_np_load(tmp_path, array):
  path = tmp_path / "a.npy"
  np.save(path, array)
  got, expected = npy.read(str(path)), np.load(path)
  assert (got.dtype, got.shape) == (expected.dtype, expected.shape)
  np.testing.assert_array_equal(got, expected)


def test_format_version_2(tmp_path):
  path = tmp_path / "v2.npy"
  array = np.arange(6, dtype=np.float32).reshape(2, 3)
  with open(path, "wb") as f:
    np.lib.format.write_array(f, array, version=(2, 0))
  np.testing.assert_array_equal(npy.read(str(path)), array)


def test_does_not_use_ast(tmp_path, monkeypatch):
  """np.load's header parser builds AST objects, which is not thread-safe on 3.11."""
  path = tmp_path / "a.npy"
  np.save(path, np.ones((3, 2), np.float32))

  def no_ast(*args, **kwargs):
    raise AssertionError("ast used")

  monkeypatch.setattr(ast, "literal_eval", no_ast)
  monkeypatch.setattr(ast, "parse", no_ast)
  with pytest.raises(AssertionError):
    np.load(path)  # the check can fail: numpy's own reader does use ast
  np.testing.assert_array_equal(npy.read(str(path)), np.ones((3, 2), np.float32))


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY garbage that is not an array",
                                     b"\x93NUMPY\x01\x00\xff"])
def test_garbage_is_a_value_error(tmp_path, content):
  path = tmp_path / "bad.npy"
  path.write_bytes(content)
  with pytest.raises(ValueError):
    npy.read(str(path))


def test_truncated_data(tmp_path):
  path = tmp_path / "t.npy"
  np.save(path, np.ones((10, 4), np.float32))
  path.write_bytes(path.read_bytes()[:-8])
  with pytest.raises(ValueError, match="truncated data: 38 of 40 values"):
    npy.read(str(path))


def test_object_array_is_refused(tmp_path):
  path = tmp_path / "o.npy"
  np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError, match="not a plain numeric array"):
    npy.read(str(path))


def test_npz_archives_and_headers_without_ast(tmp_path, monkeypatch):
  """An extraction's worker threads read earlier chunks (.npz) and the driver's threads
  feature headers: np.load and numpy's header readers build AST objects there, and an
  extraction failed once with "AST constructor recursion depth mismatch"."""
  import io  # pylint: disable=import-outside-toplevel
  import zipfile  # pylint: disable=import-outside-toplevel
  from wtal_tf.features import storage  # pylint: disable=import-outside-toplevel
  arrays = {"meta": np.asarray('{"frames": 3}'), "rgb": np.arange(8, dtype=np.float32)
            .reshape(2, 4), "flow": np.asfortranarray(np.ones((2, 3), ">f8"))}
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  path = tmp_path / "f.npy"
  np.save(path, arrays["rgb"])

  def no_ast(*args, **kwargs):
    raise AssertionError("ast used")

  monkeypatch.setattr(ast, "literal_eval", no_ast)
  monkeypatch.setattr(ast, "parse", no_ast)
  got = npy.read_npz(buffer.getvalue())
  assert got.keys() == arrays.keys() and str(got["meta"]) == '{"frames": 3}'
  for name, array in arrays.items():
    assert (got[name].dtype, got[name].shape) == (array.dtype, array.shape)
    np.testing.assert_array_equal(got[name], array)
  got["rgb"][0, 0] = 9  # writable, as np.load's arrays are
  assert storage.npy_layout(str(path)) == (np.dtype(np.float32), (2, 4))
  path.write_bytes(path.read_bytes()[:-4])
  assert storage.npy_layout(str(path)) is None  # cut short
  with pytest.raises(ValueError, match="truncated data"):
    npy.read_npz(_truncated_npz(arrays))
  with pytest.raises(zipfile.BadZipFile):
    npy.read_npz(b"not an archive")


def _truncated_npz(arrays) -> bytes:
  """An .npz whose rgb member's data is cut short (its header intact)."""
  import io  # pylint: disable=import-outside-toplevel
  import zipfile  # pylint: disable=import-outside-toplevel
  member = io.BytesIO()
  np.save(member, arrays["rgb"])
  out = io.BytesIO()
  with zipfile.ZipFile(out, "w") as z:
    z.writestr("rgb.npy", member.getvalue()[:-4])
  return out.getvalue()
