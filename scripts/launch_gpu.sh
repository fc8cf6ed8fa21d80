#!/usr/bin/env bash
# Launches the main job (python -m ttc_jax.run) on a GPU machine, as one process or as one
# of several processes on several hosts. Run with --help for usage.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/launch_gpu.sh [options] [-- --config.FIELD=VALUE ...]

One process (default): runs, from the repository root,
  python -m ttc_jax.run --config CONFIG [--workdir DIR] [overrides]
which uses every visible GPU through one (data, fsdp, tensor) mesh.

Several processes (one per host, or one per GPU): start this script once per process
with the same COORDINATOR_ADDRESS and NUM_PROCESSES and each its own PROCESS_ID
(0 .. NUM_PROCESSES-1; process 0 runs the coordinator at COORDINATOR_ADDRESS). They are
exported as JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, from which
ttc_jax.parallel.maybe_initialize_distributed calls jax.distributed.initialize(...).
Under SLURM or Open MPI, --auto lets jax detect all three instead. The workdir must be
a file system that every host sees.

Options (environment variable in brackets):
  -c, --config FILE           config file (default: configs/arith_quick.py)  [CONFIG]
  -w, --workdir DIR           run directory (default: runs/<config name>)    [WORKDIR]
      --coordinator HOST:PORT address of process 0               [COORDINATOR_ADDRESS]
      --num-processes N       number of processes                      [NUM_PROCESSES]
      --process-id I          this process, 0..N-1                        [PROCESS_ID]
      --local-devices IDS     GPUs this process uses, e.g. 0 or 0,1 (default: all)
                                                                   [JAX_LOCAL_DEVICE_IDS]
      --local-procs N         start N processes on this host, one GPU each, with a
                              coordinator on 127.0.0.1 (a one-host test of the
                              multi-process path); logs LOG_DIR/launch_gpu.<i>.log
                                                             [LOG_DIR, default: .]
      --auto                  jax.distributed.initialize() with auto-detection
                              (SLURM, Open MPI)                   [TTC_JAX_DISTRIBUTED=1]
      --install               first pip install -e . and JAX for CUDA
      --jax-spec SPEC         pip requirement for --install (default: "jax[cuda12]")
                                                                           [JAX_PIP_SPEC]
      --python EXE            Python interpreter (default: python3)             [PYTHON]
      --dry-run               print what would run, run nothing
  -h, --help                  this text

Everything after `--` is passed to ttc_jax.run.

Examples:
  scripts/launch_gpu.sh -c configs/arith_quick.py -- --config.train.steps=5000
  # two hosts, one process each (run on host A, then on host B with PROCESS_ID=1)
  COORDINATOR_ADDRESS=hostA:1234 NUM_PROCESSES=2 PROCESS_ID=0 \
    scripts/launch_gpu.sh -c configs/arith_paper.py -w /shared/runs/paper
EOF
}

die() { echo "error: $*" >&2; echo "(scripts/launch_gpu.sh --help for usage)" >&2; exit 2; }

CONFIG="${CONFIG:-configs/arith_quick.py}"
WORKDIR="${WORKDIR:-}"
COORDINATOR_ADDRESS="${COORDINATOR_ADDRESS:-}"
NUM_PROCESSES="${NUM_PROCESSES:-}"
PROCESS_ID="${PROCESS_ID:-}"
LOCAL_DEVICES="${JAX_LOCAL_DEVICE_IDS:-}"
LOCAL_PROCS=""
AUTO="${TTC_JAX_DISTRIBUTED:-0}"
INSTALL=0
JAX_PIP_SPEC="${JAX_PIP_SPEC:-jax[cuda12]}"
PYTHON="${PYTHON:-python3}"
DRY_RUN=0
OVERRIDES=()

need_arg() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -c|--config) need_arg "$@"; CONFIG="$2"; shift 2 ;;
    -w|--workdir) need_arg "$@"; WORKDIR="$2"; shift 2 ;;
    --coordinator) need_arg "$@"; COORDINATOR_ADDRESS="$2"; shift 2 ;;
    --num-processes) need_arg "$@"; NUM_PROCESSES="$2"; shift 2 ;;
    --process-id) need_arg "$@"; PROCESS_ID="$2"; shift 2 ;;
    --local-devices) need_arg "$@"; LOCAL_DEVICES="$2"; shift 2 ;;
    --local-procs) need_arg "$@"; LOCAL_PROCS="$2"; shift 2 ;;
    --auto) AUTO=1; shift ;;
    --install) INSTALL=1; shift ;;
    --jax-spec) need_arg "$@"; JAX_PIP_SPEC="$2"; shift 2 ;;
    --python) need_arg "$@"; PYTHON="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; OVERRIDES+=("$@"); break ;;
    --config.*) OVERRIDES+=("$1"); shift ;;
    *) die "unknown argument: $1" ;;
  esac
done

for o in "${OVERRIDES[@]+"${OVERRIDES[@]}"}"; do
  [[ "$o" == --config.* ]] || die "extra arguments must look like --config.FIELD=VALUE, got '$o'"
done
if [[ -n "$LOCAL_PROCS" ]]; then
  if ! is_int "$LOCAL_PROCS" || [[ "$LOCAL_PROCS" -lt 1 ]]; then die "--local-procs must be >= 1"; fi
  [[ -z "$COORDINATOR_ADDRESS$PROCESS_ID" ]] || die "--local-procs sets the coordinator and ids itself"
elif [[ -n "$COORDINATOR_ADDRESS" ]]; then
  [[ "$COORDINATOR_ADDRESS" == *:* ]] || die "COORDINATOR_ADDRESS must be HOST:PORT"
  is_int "$NUM_PROCESSES" || die "COORDINATOR_ADDRESS needs NUM_PROCESSES (an integer)"
  is_int "$PROCESS_ID" || die "COORDINATOR_ADDRESS needs PROCESS_ID (an integer)"
  [[ "$PROCESS_ID" -lt "$NUM_PROCESSES" ]] || die "PROCESS_ID must be < NUM_PROCESSES"
elif [[ -n "$NUM_PROCESSES$PROCESS_ID" && "$AUTO" != 1 ]]; then
  die "NUM_PROCESSES / PROCESS_ID need COORDINATOR_ADDRESS (or --auto)"
fi

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

show() {  # prints a command with its environment
  local a out=""
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+="$a "; else out+="$(printf '%q' "$a") "; fi
  done
  echo "${out% }"
}

if [[ $INSTALL -eq 1 ]]; then
  if [[ $DRY_RUN -eq 1 ]]; then
    show "$PYTHON" -m pip install -q -e . "$JAX_PIP_SPEC"
  else
    "$PYTHON" -m pip install -q -e . "$JAX_PIP_SPEC"
  fi
fi

JOB=("$PYTHON" -m ttc_jax.run --config "$CONFIG")
[[ -n "$WORKDIR" ]] && JOB+=(--workdir "$WORKDIR")
JOB+=("${OVERRIDES[@]+"${OVERRIDES[@]}"}")

# one process: env NAME=VALUE ... python -m ttc_jax.run ...
launch_one() {   # launch_one COORD NPROC PID LOCAL_IDS
  local envs=()
  [[ -n "$1" ]] && envs+=("JAX_COORDINATOR_ADDRESS=$1" "JAX_NUM_PROCESSES=$2" "JAX_PROCESS_ID=$3")
  [[ -n "$4" ]] && envs+=("JAX_LOCAL_DEVICE_IDS=$4")
  [[ "$AUTO" == 1 ]] && envs+=("TTC_JAX_DISTRIBUTED=1")
  if [[ $DRY_RUN -eq 1 ]]; then
    show env "${envs[@]+"${envs[@]}"}" "${JOB[@]}"
  else
    env "${envs[@]+"${envs[@]}"}" "${JOB[@]}"
  fi
}

if [[ -z "$LOCAL_PROCS" ]]; then
  launch_one "$COORDINATOR_ADDRESS" "$NUM_PROCESSES" "$PROCESS_ID" "$LOCAL_DEVICES"
  exit $?
fi

# --local-procs N: N processes on this host, process i on GPU i, one log per process
log_dir="${LOG_DIR:-.}"
mkdir -p "$log_dir"
port="${LOCAL_PORT:-$(( 20000 + RANDOM % 20000 ))}"
pids=()
trap 'for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done' INT TERM
for ((i = 0; i < LOCAL_PROCS; i++)); do
  if [[ $DRY_RUN -eq 1 ]]; then
    launch_one "127.0.0.1:$port" "$LOCAL_PROCS" "$i" "$i"
  else
    launch_one "127.0.0.1:$port" "$LOCAL_PROCS" "$i" "$i" > "$log_dir/launch_gpu.$i.log" 2>&1 &
    pids+=("$!")
    echo "process $i: pid $!, log $log_dir/launch_gpu.$i.log"
  fi
done
status=0
for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" || status=$?; done
[[ $DRY_RUN -eq 1 ]] || tail -n 20 "$log_dir/launch_gpu.0.log"
exit "$status"
