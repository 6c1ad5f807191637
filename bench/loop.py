"""The plain loop the extraction benchmarks compare Beam's runners against: one
Extractor, then one .npy write per video and stream, no Beam.

As a command it takes `python -m wtal_tf.extract`'s flags and imports only what
the loop needs, so the two can be timed as whole processes side by side
(bench_cluster --part=commands):

python -m bench.loop --video_dir=DIR --output_dir=OUT [extract's flags]
"""

import os
import time

import numpy as np

from wtal_tf import cli
from wtal_tf import contract
from wtal_tf.config import ExtractConfig
from wtal_tf.features import extraction
from wtal_tf.features import video


def plain_loop(cfg: ExtractConfig, paths) -> float:
  """Wall seconds of extracting `paths` one after another, the encoder's build included."""
  start = time.perf_counter()
  extractor = extraction.Extractor(cfg)
  for path in paths:
    result = extractor(path)
    for s, x in result.features.items():
      target = contract.feature_path(cfg.output_dir, cfg.split, s, video.name(path))
      os.makedirs(os.path.dirname(target), exist_ok=True)
      np.save(target, x)
  return time.perf_counter() - start


def main(argv):
  del argv
  cfg = cli.config_from_flags().extract
  paths, _ = video.list_videos(cfg.video_dir)
  plain_loop(cfg, paths)


if __name__ == "__main__":
  cli.define_flags(("extract",))
  cli.run(main)
