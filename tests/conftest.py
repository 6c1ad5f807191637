"""Shared fixtures: tiny generated datasets and the optional ../shared references."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from wtal_tf import config as C
from wtal_tf import contract
from wtal_tf.data import synthetic
from video_helpers import CHUNKED_CHUNKS, CHUNKED_FRAMES, write_chunked_videos

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("WTAL_SHARED", REPO.parent / "shared"))


def frameworks_loaded_by(modules, then: str = "") -> list[str]:
  """The TensorFlow/Keras modules a fresh interpreter holds after importing `modules`
  and running the code `then`."""
  code = (f"import sys\nfor m in {list(modules)!r}: __import__(m)\n{then}\n"
          "print(' '.join(sorted(m for m in sys.modules "
          "if m.split('.')[0] in ('tensorflow', 'keras'))))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        check=True)
  return proc.stdout.split()


def shared_path(*parts) -> pathlib.Path:
  """A file of ../shared, or skip the test when it is absent (a user's clone)."""
  path = SHARED.joinpath(*parts)
  if not path.exists():
    pytest.skip(f"{path} not available")
  return path


def write_video(root, split, name, arrays):
  for stream, x in arrays.items():
    path = pathlib.Path(root, "features", split, stream, name + ".npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, x)


def write_dataset(root, train, test, classes=("A", "B", "C"), d=4, seed=0,
                  train_subset="validation"):
  """A per-video dataset. train/test: {name: (labels, T)}; segments are planted
  one per label at the start of the video (seconds at 0.64 s a segment)."""
  rng = np.random.default_rng(seed)
  database = {}
  for subset, split, videos in ((train_subset, "train", train), ("test", "test", test)):
    for name, (labels, t) in videos.items():
      write_video(root, split, name, {s: rng.standard_normal((t, d)).astype(np.float32)
                                      for s in ("rgb", "flow")})
      database[name] = {"subset": subset, "duration": t * 0.64, "annotations": [
          {"label": l, "segment": [0.64 * k, 0.64 * (k + 1)]} for k, l in enumerate(labels)]}
  # make sure every class appears somewhere
  extra = [c for c in classes if not any(c in l for l, _ in {**train, **test}.values())]
  assert not extra, extra
  pathlib.Path(root, "gt.json").write_text(json.dumps({"database": database}))
  return root


def config_of_flagfile(path) -> C.Config:
  """The config a tool given only `--flagfile=path` runs with."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from wtal_tf import cli  # pylint: disable=import-outside-toplevel
  fv = flags.FlagValues()
  cli.define_flags(fv=fv)
  fv(["tool", f"--flagfile={path}"])
  return cli.config_from_flags(fv=fv)


def tiny_config(data_dir, model_dir, **groups) -> C.Config:
  cfg = C.Config(data=C.DataConfig(data_dir=str(data_dir)),
                 train=C.TrainConfig(model_dir=str(model_dir), train_steps=20, log_every=5,
                                     checkpoint_every=10, eval_every=0, num_vis_videos=0),
                 model=C.ModelConfig(attention_units=8))
  return cfg.replace(**groups) if groups else cfg


@pytest.fixture
def good(tmp_path):
  """A tiny valid dataset: train a (A), b (B); test x (A); 4 features a stream."""
  return write_dataset(tmp_path / "d", {"a": (["A"], 4), "b": (["B"], 3)}, {"x": (["A"], 5)},
                       classes=("A", "B"))


@pytest.fixture
def tiny_model(good, tmp_path):
  """A model dir trained 2 steps on `good` (classes A, B; rgb and flow of 4 features)."""
  from wtal_tf.training import trainer  # pylint: disable=import-outside-toplevel
  # (TensorFlow: not loaded by the tests that do not use it)
  cfg = tiny_config(good, tmp_path / "m", train={"train_steps": 2, "checkpoint_every": 1})
  trainer.train(cfg)
  return cfg


SMALL_SYNTHETIC = synthetic.SyntheticConfig(num_train=40, num_test=10, feature_dim=16, seed=3)


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory):
  """A small THUMOS14-shaped synthetic dataset (shared, read-only)."""
  return synthetic.generate(SMALL_SYNTHETIC, str(tmp_path_factory.mktemp("syn") / "data"))


S3_KEYS = ("--s3_access_key_id=test", "--s3_secret_access_key=test",
           "--s3_region_name=us-east-1")  # any keys: the test server checks none


@pytest.fixture(scope="session")
def s3_server():
  """(endpoint URL, boto3 client) of an S3 server over HTTP on 127.0.0.1 (moto's), with
  an empty bucket "wtal"; Beam reaches it with --s3_endpoint_url and S3_KEYS."""
  moto_server = pytest.importorskip("moto.server")
  boto3 = pytest.importorskip("boto3")
  server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
  server.start()
  try:
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
    client.create_bucket(Bucket="wtal")
    yield endpoint, client
  finally:
    server.stop()


SMALL_RGB = ("--streams=rgb", "--random_init_seed=0", "--resize_shorter=40", "--crop_size=32",
             "--chunk_segments=2")  # the extraction flags of the object-store tests
IN_MEMORY = ("--direct_running_mode=in_memory",)
WORKER_PROCESSES = ("--direct_running_mode=multi_processing",)  # (the default: threads)


def small_rgb_config(videos, out, *pipeline_args) -> C.ExtractConfig:
  """SMALL_RGB as a config, run in this process (in_memory), with more Beam arguments."""
  return C.ExtractConfig(video_dir=str(videos), output_dir=str(out), streams=("rgb",),
                         random_init_seed=0, resize_shorter=40, crop_size=32,
                         chunk_segments=2, pipeline_args=(*IN_MEMORY, *pipeline_args))


@pytest.fixture(scope="session")
def chunked_videos(tmp_path_factory):
  """The CHUNKED_FRAMES videos (video_helpers.write_chunked_videos) of the object-store
  tests: a folder shared, read-only."""
  return write_chunked_videos(tmp_path_factory.mktemp("chunked_videos"))


def assert_equals_local_run(stored: dict[str, bytes], local: pathlib.Path) -> None:
  """An extraction of the CHUNKED_FRAMES videos into an object store ({key below OUT:
  bytes}) equals the local one in `local` (small_rgb_config): the same files, no
  temporaries, chunks, marks or summaries left, the features byte for byte."""
  on_disk = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*")
             if p.is_file()}
  assert sorted(stored) == sorted(on_disk)
  for name, n in CHUNKED_FRAMES.items():
    key = f"{contract.FEATURES_DIR}/test/rgb/{name}.npy"
    assert stored[key] == on_disk[key]  # the whole .npy file, byte for byte
    status = json.loads(stored[f"extract_status/test/{name}.json"])
    assert status["status"] == "ok" and status["segments"] == n // contract.SEGMENT_FRAMES
    assert status["chunks"] == CHUNKED_CHUNKS[name]
  assert (json.loads(stored[contract.GT_FILE])["database"]
          == json.loads(on_disk[contract.GT_FILE])["database"])
