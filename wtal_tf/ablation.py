"""STPN and the rows of the paper's Table 1, trained and evaluated under one config.

python -m wtal_tf.ablation --flagfile=flags/synthetic.cfg --data_dir=DIR --model_dir=OUT \\
    [--seeds=3] [--ablation_rows=stpn,lfg_lbg_lguide_lcluster]

Writes OUT/ablation.md, ablation.csv and, when the STPN or the full row runs,
ablation_curve.png and ablation_curve.csv (docs/ablation.md).
"""

from absl import flags

from wtal_tf import cli
from wtal_tf.experiments import ablation


def define_flags(fv=flags.FLAGS):
  cli.define_flags(fv=fv)
  cli.define_seeds_flag(fv)
  flags.DEFINE_list("ablation_rows", [], "Rows to run, by slug (e.g. "
                    "stpn,lfg_lbg_lguide_lcluster; stpn = lfg_lsparse_stpn); default all.",
                    flag_values=fv)


def main(argv):
  del argv
  cfg = cli.config_from_flags()
  cli.require(cfg.train.model_dir, "model_dir")
  results = ablation.run(cfg, cli.FLAGS.seeds, ablation.select_rows(cli.FLAGS.ablation_rows),
                         flagfile=cli.config_flagfile)
  print(ablation.summary(results, cfg))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
