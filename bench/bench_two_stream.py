"""Two-stream extraction end to end with each flow engine: segments/s.

The real clip ../shared/videos/cricket.mp4 (79 frames: 4 segments), the default geometry
(256 -> 224 crop), Kinetics-400 RGB weights and random-init flow weights (no flow
checkpoint is packaged); each engine in a fresh Extractor, after a warm-up pass (the
Keras engine compiles once per frame size).

flock -x /tmp/wtal_heavy.lock .venv/bin/python -m bench.bench_two_stream
"""

import argparse
import json
import os
import time

from wtal_tf.config import ExtractConfig
from wtal_tf.config import FLOW_ENGINES
from wtal_tf.features import extraction

CLIP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                    "shared", "videos", "cricket.mp4")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--clip", default=CLIP, help="the video extracted (default: %(default)s)")
  clip = parser.parse_args().clip
  rows = []
  rgb = extraction.build_encoders(ExtractConfig(), ("rgb",))  # the packaged weights
  for engine in FLOW_ENGINES:
    flow = extraction.build_encoders(ExtractConfig(random_init_seed=0), ("flow",))
    extractor = extraction.Extractor(ExtractConfig(flow_engine=engine), ("rgb", "flow"),
                                     encoders={**rgb, **flow})
    extractor(clip)  # warm-up: traces and compiles
    start = time.perf_counter()
    result = extractor(clip)
    seconds = time.perf_counter() - start
    segments = len(result.features["flow"])
    rows.append({"flow_engine": engine, "segments": segments, "seconds": seconds,
                 "segments_per_s": segments / seconds})
    print(json.dumps(rows[-1]), flush=True)
  print(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()
