"""OUT on HDFS, as a user points --output_dir at hdfs://... with --hdfs_host, --hdfs_port and
--hdfs_user: Beam's own hadoopfilesystem and the `hdfs` package's WebHDFS client against a
WebHDFS server on 127.0.0.1 (tests/webhdfs_server.py, which keeps the HDFS behaviour
that differs from a disk and an object store: a rename never overwrites, a listing is one
folder's). The extraction equals one into a local folder byte for byte, skips on a rerun,
replaces its files when the settings change, and removes stale temporaries."""

import dataclasses
import io

import numpy as np
import pytest

from conftest import assert_equals_local_run, small_rgb_config
from video_helpers import CHUNKED_FRAMES
from webhdfs_server import WebHDFS
from wtal_tf import contract
from wtal_tf.errors import UserError
from wtal_tf.features import beam_pipeline as pipeline
from wtal_tf.features import beam_steps as steps
from wtal_tf.features import storage

hdfs_package = pytest.importorskip("hdfs")  # the WebHDFS client of Beam's hadoopfilesystem

OUT = "hdfs://features-run"  # (without --hdfs_full_urls: the path ROOT)
ROOT = "/features-run"
USER = "--hdfs_user=test"


@pytest.fixture(scope="module")
def hdfs():
  """(server, the Beam arguments that reach it)."""
  with WebHDFS() as server:
    yield server, ("--hdfs_host=127.0.0.1", f"--hdfs_port={server.port}", USER)


def test_extraction_into_hdfs_equals_a_local_one_and_reruns_as_on_a_disk(hdfs, chunked_videos,
                                                                         tmp_path):
  server, args = hdfs
  pipeline.extract(small_rgb_config(chunked_videos, OUT, *args))
  local = tmp_path / "local"
  pipeline.extract(small_rgb_config(chunked_videos, local))
  assert_equals_local_run(server.files(ROOT), local)

  # A rerun: every video skipped, no feature file or status record written again; the
  # stale temporaries of killed writers (one killed before any byte) removed, a live
  # writer's kept. HDFS lists one folder at a time, so these are found folder by folder.
  created = len(server.created())
  old = storage.STALE_TEMPORARY_S + 60
  stale = [f"{steps.STATUS_DIR}/test/.gone.json{storage.TMP_MARK}{k}" for k in range(2)]
  server.put(f"{ROOT}/{stale[0]}", b"", age_s=old)
  server.put(f"{ROOT}/{stale[1]}", b"{", age_s=old)
  live = f".{contract.GT_FILE}{storage.TMP_MARK}live"
  server.put(f"{ROOT}/{live}", b"{")
  again = pipeline.extract(small_rgb_config(chunked_videos, OUT, *args))
  assert {n: r["status"] for n, r in again.items()} == {
      n: steps.SKIPPED for n in CHUNKED_FRAMES}
  assert [p for p in server.created()[created:]
          if f"/{contract.FEATURES_DIR}/" in p or f"/{steps.STATUS_DIR}/" in p] == []
  files = server.files(ROOT)
  assert not set(stale) & set(files)
  assert files.pop(live) == b"{"

  # Other settings: the features are made again and replace the old files (HDFS's rename
  # refuses to overwrite), equal to a local run with the same settings.
  smaller = {"crop_size": 24}
  hdfs_run = small_rgb_config(chunked_videos, OUT, *args)
  pipeline.extract(dataclasses.replace(hdfs_run, **smaller))
  pipeline.extract(dataclasses.replace(small_rgb_config(chunked_videos, tmp_path / "l24"),
                                       **smaller))
  files = server.files(ROOT)
  del files[live]
  assert_equals_local_run(files, tmp_path / "l24")
  x = np.load(io.BytesIO(files[f"{contract.FEATURES_DIR}/test/rgb/long.npy"]))
  assert x.dtype == np.float32 and x.shape == (5, contract.FEATURE_DIM)


def test_no_namenode_is_one_error_before_any_work(chunked_videos):
  with WebHDFS() as server:
    port = server.port  # then closed: nothing listens there
  unreachable = small_rgb_config(chunked_videos, OUT, "--hdfs_host=127.0.0.1",
                                 f"--hdfs_port={port}", USER)
  with pytest.raises(UserError, match=r"^hdfs://features-run: cannot write \(.*Connection "
                     r"refused.*\)$"):
    pipeline.extract(unreachable)
  with pytest.raises(UserError, match=r"^hdfs://features-run: cannot write \(hdfs_host is not "
                     r"set\)$"):
    pipeline.extract(small_rgb_config(chunked_videos, OUT))  # no --hdfs_host


def test_the_test_server_keeps_what_makes_hdfs_differ_from_a_disk():
  """Through the `hdfs` package's client, as Beam uses it: a rename onto a file is refused,
  onto a folder moves into it; a listing is one folder's; a file lists as an error."""
  with WebHDFS() as server:
    client = hdfs_package.InsecureClient(f"http://127.0.0.1:{server.port}", user="test")
    with client.write("/a/b/c.txt") as w:  # CREATE's 307 redirect, then the data
      w.write(b"one")
    client.write("/a/d.txt", data=b"two")
    assert client.list("/a") == ["b", "d.txt"]  # b's file is not listed
    assert client.status("/a/b")["type"] == "DIRECTORY"
    with pytest.raises(hdfs_package.HdfsError, match="not a directory"):
      client.list("/a/d.txt")
    with pytest.raises(hdfs_package.HdfsError, match="Unable to rename"):
      client.rename("/a/d.txt", "/a/b/c.txt")
    client.rename("/a/d.txt", "/a/b")  # into the folder
    with client.read("/a/b/d.txt", offset=1) as r:
      assert r.read() == b"wo"
    with pytest.raises(hdfs_package.HdfsError, match="already exists"):
      client.write("/a/b/c.txt", data=b"x")
    assert client.delete("/a", recursive=True) and not client.delete("/a")
    assert server.files() == {} and server.created() == ["/a/b/c.txt", "/a/d.txt"]
