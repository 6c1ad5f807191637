"""Raw videos -> I3D features (an Apache Beam pipeline), as a dataset `localize` reads.

python -m wtal_tf.extract --video_dir=DIR --output_dir=OUT [--split=test] [--streams=rgb,flow] \\
    [--rgb_checkpoint=P] [--flow_checkpoint=P] [--batch_segments=N] [--annotations=GT.json] \\
    [Beam options, e.g. --runner=FlinkRunner --flink_master=HOST:PORT]

See docs/raw_video.md.
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.features import beam_pipeline


def define_flags(fv=flags.FLAGS):
  cli.define_flags(("extract",), fv=fv)


def main(argv):
  cfg = cli.config_from_flags(pipeline_args=tuple(argv[1:]))
  beam_pipeline.extract(cfg.extract)


if __name__ == "__main__":
  define_flags()
  cli.run(main, pass_unknown=True)
