"""OUT on S3, as a user points --output_dir at s3://bucket/... with --s3_endpoint_url:
Beam's own s3filesystem and boto3 client against an S3 server over HTTP on 127.0.0.1
(moto's), the DirectRunner's worker processes and the driver's own reads included.
The extraction equals one into a local folder byte for byte and skips on a rerun; a
missing bucket is one line before any work; two runs at once both succeed."""

import io
import os
import subprocess
import sys

import numpy as np

from conftest import (REPO, S3_KEYS, SMALL_RGB, WORKER_PROCESSES, assert_equals_local_run,
                      small_rgb_config)
from video_helpers import CHUNKED_FRAMES
from wtal_tf import contract
from wtal_tf.features import beam_pipeline as pipeline
from wtal_tf.features import beam_steps as steps

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
FRAMES = CHUNKED_FRAMES


def extract_command(videos, out, *args) -> list[str]:
  return [sys.executable, "-m", "wtal_tf.extract", f"--video_dir={videos}",
          f"--output_dir={out}", *SMALL_RGB, "--direct_num_workers=2", *args]


def objects(client, prefix):
  """{key below prefix: (bytes, ETag, LastModified)} of the bucket's objects."""
  listing = client.list_objects_v2(Bucket="wtal", Prefix=prefix + "/").get("Contents", [])
  return {o["Key"][len(prefix) + 1:]: (
      client.get_object(Bucket="wtal", Key=o["Key"])["Body"].read(), o["ETag"],
      o["LastModified"]) for o in listing}


def test_extraction_into_s3_equals_a_local_one_and_skips_on_a_rerun(chunked_videos, tmp_path,
                                                                    s3_server):
  endpoint, client = s3_server
  s3 = [f"--s3_endpoint_url={endpoint}", *S3_KEYS]
  out = "s3://wtal/features-run"
  # Two runs at once (one with the DirectRunner's worker processes, one with its worker
  # threads): both succeed, and gt.json lists every video (checked below against a local
  # run's).
  runs = [subprocess.Popen([*extract_command(chunked_videos, out, *s3), *mode], cwd=REPO, env=ENV,
                           stderr=subprocess.PIPE, text=True) for mode in (WORKER_PROCESSES, ())]
  for run in runs:
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
  local = tmp_path / "local"
  pipeline.extract(small_rgb_config(chunked_videos, local))
  stored = objects(client, "features-run")
  assert_equals_local_run({k: data for k, (data, _, _) in stored.items()}, local)
  again = pipeline.extract(small_rgb_config(chunked_videos, out, *s3))  # here: the driver's reads
  assert {n: r["status"] for n, r in again.items()} == {n: steps.SKIPPED for n in FRAMES}
  after = objects(client, "features-run")
  for key, (data, etag, written) in stored.items():
    if key != contract.GT_FILE:  # (gt.json is merged again)
      assert after[key] == (data, etag, written), key  # not written again
  x = np.load(io.BytesIO(after[f"{contract.FEATURES_DIR}/test/rgb/long.npy"][0]))
  assert x.dtype == np.float32 and x.shape == (5, contract.FEATURE_DIM)


def test_a_missing_bucket_is_one_line_before_any_work(chunked_videos, s3_server):
  endpoint, _ = s3_server
  proc = subprocess.run(extract_command(chunked_videos, "s3://no-such-bucket/out",
                                        f"--s3_endpoint_url={endpoint}", *S3_KEYS),
                        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines() == [
      "error: s3://no-such-bucket/out: cannot write (An error occurred (NoSuchBucket) when "
      "calling the CreateMultipartUpload operation: The specified bucket does not exist)"]
