#!/usr/bin/env bash
# Create, set up, train on and delete a Google Cloud TPU VM (single host or pod slice).
# Every worker of the slice gets the same clone, venv and command (`gcloud ... --worker=all`).
# Run `./launch_tpu.sh help` for the subcommands and the environment variables.
set -euo pipefail
# Read LINES before bash can overwrite it: with checkwinsize (on by default since bash 5) a script
# run from a terminal sets LINES to the terminal height after its first external command.
LOG_LINES=${LINES:-100}
shopt -u checkwinsize

PROG=${0##*/}

usage() {
  cat <<EOF
Usage: $PROG SUBCOMMAND [ARGS...]

Subcommands:
  create          create the TPU VM (extra ARGS are passed to 'gcloud ... create')
  setup           on every worker: clone or update the repo, create its venv, install it and jax[tpu]
  run ARGS...     on every worker: start 'python -m mmgen_jax.main --distributed ARGS' in the
                  background (nohup); adds --workdir=\$WORKDIR unless ARGS has --workdir
  logs            follow logs/latest.log on worker \$WORKER
  stop            kill the process recorded in logs/latest.pid on every worker
  delete          delete the TPU VM
  help            show this text

Environment:
  TPU_NAME          TPU VM name (required)
  ZONE              e.g. us-central2-b (required)
  PROJECT           Google Cloud project id (required)
  ACCELERATOR_TYPE  create: accelerator type (default v4-8; e.g. v4-32 for a 4-host pod slice)
  RUNTIME_VERSION   create: TPU VM software version (default tpu-ubuntu2204-base)
  SPOT=1            create: a Spot TPU (preemptible, cheaper)
  REPO_URL          setup: git URL to clone (default https://github.com/mmgen-jax/mmgen_jax.git)
  REPO_REF          setup: branch, tag or commit to check out (default main)
  REMOTE_DIR        checkout on the workers, relative to \$HOME unless absolute (default mmgen_jax)
  REMOTE_PYTHON     setup: interpreter for the venv (default: newest python >= 3.11 on the
                    workers, installing python3.11 with apt if there is none)
  BUCKET            run: e.g. gs://my-bucket; WORKDIR defaults to
                    \$BUCKET/mmgen_jax_runs/<UTC %Y%m%d-%H%M%S> (required unless WORKDIR or --workdir)
  WORKDIR           run: the --workdir to add when ARGS has none
  RUN_ID            run: name of the log and pid files (default: the UTC timestamp)
  TFDS_DATA_DIR     run: exported on the workers when set here
  WORKER            logs: which worker to read (default 0)
  LINES             logs: lines of history to show first (default 100)
  DRY_RUN=1         print each gcloud command ('+ ' and the shell-quoted words) instead of running it

Logs and pid files are written to \$REMOTE_DIR/logs/<run id>.{log,pid} on every worker, with
latest.log and latest.pid pointing at the newest run.
EOF
}

# Print an error naming the problem and exit with status 2 (a usage error).
usage_error() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  printf "Run '%s help' for usage.\n" "$PROG" >&2
  exit 2
}

is_true() {
  case "${1:-}" in
    1 | true | TRUE | True | yes | on) return 0 ;;
    *) return 1 ;;
  esac
}

require_vars() {
  local var
  for var in "$@"; do
    if [[ -z "${!var:-}" ]]; then
      usage_error "$var is not set (required for '$SUBCOMMAND')"
    fi
  done
}

# Shell-quote one word for the remote shell (bash on the TPU VM workers).
q() {
  printf '%q' "$1"
}

# Run (or with DRY_RUN=1 only print) one command. The printed line is '+ ' followed by the
# printf-%q-quoted words, so it can be pasted into a shell.
run_cmd() {
  local line
  line="+$(printf ' %q' "$@")"
  if is_true "${DRY_RUN:-}"; then
    printf '%s\n' "$line"
  else
    printf '%s\n' "$line" >&2
    "$@"
  fi
}

tpu_ssh() {
  local worker=$1 remote=$2
  run_cmd gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" \
    --worker="$worker" --command="$remote"
}

no_args() {
  if (($# > 0)); then
    usage_error "'$SUBCOMMAND' takes no arguments (got: $*)"
  fi
}

cmd_create() {
  local extra=()
  if is_true "${SPOT:-}"; then
    extra+=(--spot)
  fi
  run_cmd gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
    ${extra[@]+"${extra[@]}"} "$@"
}

# The remote strings below are single-quoted on purpose: their $ expressions expand on the workers.
# shellcheck disable=SC2016
cmd_setup() {
  no_args "$@"
  local d py remote
  d=$(q "$REMOTE_DIR")
  py=$(q "${REMOTE_PYTHON:-}")
  remote="set -e; cd;"
  # Clone once; afterwards fetch, check out the ref and fast-forward when it is a branch.
  remote+=" if [ -d $d/.git ]; then git -C $d fetch; else git clone $(q "$REPO_URL") $d; fi;"
  remote+=" git -C $d checkout $(q "$REPO_REF");"
  remote+=" if git -C $d symbolic-ref -q HEAD >/dev/null; then git -C $d pull --ff-only; fi;"
  # The venv is created only when missing, with a Python >= 3.11 (the project's minimum).
  remote+=" if [ ! -x $d/.venv/bin/python ]; then py=$py;"
  remote+=' if [ -z "$py" ]; then for c in python3.13 python3.12 python3.11 python3; do'
  remote+=' if command -v "$c" >/dev/null'
  remote+=' && "$c" -c "import sys; sys.exit(sys.version_info < (3, 11))"; then py=$c; break; fi;'
  remote+=' done; fi;'
  remote+=' if [ -z "$py" ]; then sudo apt-get update -qq;'
  remote+=' sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv;'
  remote+=' py=python3.11; fi;'
  remote+=" \"\$py\" -m venv $d/.venv || { sudo apt-get update -qq;"
  remote+=' sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${py##*/}-venv";'
  remote+=" \"\$py\" -m venv --clear $d/.venv; }; fi;"
  remote+=" $d/.venv/bin/python -m pip install -U pip;"
  remote+=" $d/.venv/bin/python -m pip install -e $d;"
  remote+=" $d/.venv/bin/python -m pip install -U 'jax[tpu]';"
  remote+=' echo "$(hostname): set up $(git -C '"$d"' rev-parse --short HEAD)"'
  tpu_ssh all "$remote"
}

# shellcheck disable=SC2016
cmd_run() {
  local arg has_workdir=0 workdir=""
  for arg in "$@"; do
    case "$arg" in
      --workdir | --workdir=*) has_workdir=1 ;;
    esac
  done
  local run_id=${RUN_ID:-$(date -u +%Y%m%d-%H%M%S)}
  [[ "$run_id" =~ ^[A-Za-z0-9._-]+$ ]] || usage_error "RUN_ID may use only letters, digits, '.', '_' and '-' (got '$run_id')"
  # --distributed first, so that an explicit --nodistributed among the arguments wins.
  local py_args=(--distributed)
  if ((!has_workdir)); then
    workdir=${WORKDIR:-}
    if [[ -z "$workdir" ]]; then
      [[ -n "${BUCKET:-}" ]] || usage_error "BUCKET is not set (required for 'run' unless WORKDIR or --workdir= is given)"
      workdir="${BUCKET%/}/mmgen_jax_runs/$run_id"
    fi
    py_args+=("--workdir=$workdir")
  fi
  py_args+=("$@")

  local d log pid remote
  d=$(q "$REMOTE_DIR")
  log=$(q "logs/$run_id.log")
  pid=$(q "logs/$run_id.pid")
  remote="set -e; cd; mkdir -p $d/logs; cd $d;"
  remote+=' if [ ! -x .venv/bin/python ]; then echo "$(hostname): no '"$d"'/.venv; run setup first" >&2; exit 1; fi;'
  # A TPU serves one process at a time. (Matching the command line, not just a live pid, keeps a
  # pid that the system has since reused for something else from counting.)
  remote+=' if [ -f logs/latest.pid ] && grep -qs mmgen_jax.main "/proc/$(cat logs/latest.pid)/cmdline"; then'
  remote+=' echo "$(hostname): pid $(cat logs/latest.pid) is still running; stop it first" >&2; exit 1; fi;'
  if [[ -n "${TFDS_DATA_DIR:-}" ]]; then
    remote+=" export TFDS_DATA_DIR=$(q "$TFDS_DATA_DIR");"
  fi
  remote+=" nohup .venv/bin/python -m mmgen_jax.main $(printf '%q ' "${py_args[@]}")"
  remote+="> $log 2>&1 < /dev/null & echo \$! > $pid;"
  remote+=" ln -sf $(q "$run_id.pid") logs/latest.pid; ln -sf $(q "$run_id.log") logs/latest.log;"
  remote+=' echo "$(hostname): started pid $(cat '"$pid"') logging to '"$d/$log"'"'

  printf '%s: run %s%s\n' "$PROG" "$run_id" "${workdir:+, workdir $workdir}" >&2
  tpu_ssh all "$remote"
  printf "%s: follow it with '%s logs', end it with '%s stop'\n" "$PROG" "$PROG" "$PROG" >&2
}

cmd_logs() {
  no_args "$@"
  tpu_ssh "${WORKER:-0}" "tail -n $(q "$LOG_LINES") -f $(q "$REMOTE_DIR/logs/latest.log")"
}

# shellcheck disable=SC2016
cmd_stop() {
  no_args "$@"
  local f remote
  f=$(q "$REMOTE_DIR/logs/latest.pid")
  remote="if [ -f $f ]; then pid=\$(cat $f);"
  # Only a pid that is still running mmgen_jax.main is killed (never one the system reused).
  remote+=' if grep -qs mmgen_jax.main "/proc/$pid/cmdline" && kill "$pid"; then'
  remote+=' echo "$(hostname): stopped pid $pid";'
  remote+=' else echo "$(hostname): pid $pid is not running mmgen_jax.main"; fi;'
  remote+=' else echo "$(hostname): no pid file '"$f"'" >&2; fi'
  tpu_ssh all "$remote"
}

cmd_delete() {
  no_args "$@"
  run_cmd gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" --quiet
}

main() {
  SUBCOMMAND=${1:-}
  case "$SUBCOMMAND" in
    help | -h | --help)
      usage
      return 0
      ;;
    "")
      usage >&2
      usage_error "missing subcommand"
      ;;
    create | setup | run | logs | stop | delete) shift ;;
    *) usage_error "unknown subcommand '$SUBCOMMAND' (expected create, setup, run, logs, stop, delete or help)" ;;
  esac

  require_vars TPU_NAME ZONE PROJECT
  ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
  RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
  REPO_URL=${REPO_URL:-https://github.com/mmgen-jax/mmgen_jax.git}
  REPO_REF=${REPO_REF:-main}
  REMOTE_DIR=${REMOTE_DIR:-mmgen_jax}
  REMOTE_DIR=${REMOTE_DIR#\~/} # "~/x" means x under $HOME, where every remote command starts
  [[ -n "$REMOTE_DIR" ]] || usage_error "REMOTE_DIR must name a directory under \$HOME (or an absolute path)"

  "cmd_$SUBCOMMAND" "$@"
}

main "$@"
