"""OUT on Google Cloud Storage, as a user points --output_dir at gs://bucket/...: Beam's own
gcsfilesystem and google-cloud-storage client against a GCS emulator over HTTP on
127.0.0.1 (gcp-storage-emulator), reached through the client's STORAGE_EMULATOR_HOST.
The DirectRunner's worker processes and the driver's own reads are included. Without
google_auth_httplib2 (installed by apache-beam[gcp], not here) Beam connects anonymously,
so the credential lookup is the one part not exercised. The extraction equals one into a
local folder byte for byte and skips on a rerun; a missing bucket is one line before any
work."""

import logging
import os
import socket
import subprocess
import sys

import pytest

from conftest import (IN_MEMORY, REPO, SMALL_RGB, WORKER_PROCESSES, assert_equals_local_run,
                      small_rgb_config)
from video_helpers import CHUNKED_FRAMES
from wtal_tf import contract
from wtal_tf.features import beam_pipeline as pipeline
from wtal_tf.features import beam_steps as steps
from wtal_tf.features import storage as files

emulator = pytest.importorskip("gcp_storage_emulator.server")
storage = pytest.importorskip("google.cloud.storage")

BUCKET = "wtal"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"  # google-cloud-storage's own variable


@pytest.fixture(scope="module")
def gcs(monkeypatch_module):
  """A client of an emulated GCS with an empty bucket BUCKET, whose address is in this
  process's environment (so in the processes the tests start, and their workers)."""
  logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  try:
    monkeypatch_module.setenv(EMULATOR_ENV, f"http://127.0.0.1:{port}")
    yield storage.Client.create_anonymous_client()
  finally:
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as m:
    yield m


def extract(videos, out, *args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "wtal_tf.extract", f"--video_dir={videos}",
                         f"--output_dir={out}", *SMALL_RGB, *args], cwd=REPO,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True,
                        text=True, timeout=600)


def blobs(client, prefix) -> dict[str, tuple[bytes, int]]:
  """{name below prefix: (bytes, generation)} of the bucket's objects."""
  return {b.name[len(prefix) + 1:]: (b.download_as_bytes(), b.generation)
          for b in client.list_blobs(BUCKET, prefix=prefix + "/")}


def test_extraction_into_gcs_equals_a_local_one_and_skips_on_a_rerun(gcs, chunked_videos, tmp_path):
  out = f"gs://{BUCKET}/features-run"
  proc = extract(chunked_videos, out, "--direct_num_workers=2", *WORKER_PROCESSES)
  assert proc.returncode == 0, proc.stderr[-3000:]
  local = tmp_path / "local"
  pipeline.extract(small_rgb_config(chunked_videos, local))
  stored = blobs(gcs, "features-run")
  assert_equals_local_run({k: data for k, (data, _) in stored.items()}, local)
  again = pipeline.extract(small_rgb_config(chunked_videos, out))  # here, in-process: the
  # driver's reads
  assert {n: r["status"] for n, r in again.items()} == {
      n: steps.SKIPPED for n in CHUNKED_FRAMES}
  after = blobs(gcs, "features-run")
  for key, (data, generation) in stored.items():
    if key != contract.GT_FILE:  # (gt.json is merged again)
      assert after[key] == (data, generation), key  # not written again


def test_a_missing_bucket_is_one_line_before_any_work(gcs, chunked_videos):
  proc = extract(chunked_videos, "gs://no-such-bucket/out", *IN_MEMORY)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert lines == ["error: gs://no-such-bucket/out: cannot write (Request failed with status "
                   "code 404)"]
  assert [b.name for b in gcs.list_buckets()] == [BUCKET]  # no bucket made on the way


def test_a_delete_takes_the_object_named_and_no_other(gcs):
  """Beam's GCS filesystem deletes what a path matches as a pattern (storage._delete_file)."""
  names = ("match [2].npz", "match 2.npz", "a*.npz", "ab.npz", "a?.npz")
  for name in names:
    files.write_bytes(f"gs://{BUCKET}/deletes/{name}", b"x")
  files.delete([f"gs://{BUCKET}/deletes/{n}"
                for n in ("match [2].npz", "a*.npz", "a?.npz", "missing.npz")])
  assert sorted(blobs(gcs, "deletes")) == ["ab.npz", "match 2.npz"]
