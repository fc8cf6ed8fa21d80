#!/usr/bin/env bash
# Launches the main job (python -m ttc_jax.run) on every host of a Cloud TPU VM slice.
# Run with --help for usage.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/launch_tpu_vm.sh --tpu NAME --zone ZONE --workdir DIR [options] [-- --config.FIELD=VALUE ...]

Runs the same command on every worker of a TPU VM slice through
  gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...
that (1) puts this repository in ~/ttc_jax on each worker (copied from this checkout:
its tracked files plus untracked source files under ttc_jax/ and configs/, nothing else,
so local environments and run directories stay here; or cloned from --repo), (2) installs it with `pip install -e . "jax[tpu]"` (once per
worker), (3) runs `python -m ttc_jax.run --config CONFIG --workdir DIR [overrides]`
with TTC_JAX_DISTRIBUTED=1, so ttc_jax.parallel.maybe_initialize_distributed calls
jax.distributed.initialize() (TPU VMs auto-detect coordinator, process count and
process id). Output goes to the terminal and to ~/ttc_jax_run.log on each worker.

Options (environment variable in brackets):
  -t, --tpu NAME        TPU VM name                                    [TPU_NAME]
  -z, --zone ZONE       its zone, e.g. us-central2-b                   [ZONE]
  -p, --project ID      Google Cloud project (default: gcloud config)  [PROJECT]
  -c, --config FILE     config file (default: configs/arith_paper.py)  [CONFIG]
  -w, --workdir DIR     run directory that EVERY worker sees: a shared
                        file system path (Filestore/NFS mount), or gs://BUCKET/PATH,
                        which is mounted on each worker with gcsfuse
                        (must be installed there) under /tmp/ttc_gcs/BUCKET [WORKDIR]
      --repo URL        git URL to clone on the workers instead of copying
                        this checkout (e.g. https://github.com/ORG/ttc_jax) [REPO_URL]
      --ref REF         branch/tag/commit to check out with --repo     [REPO_REF]
      --jax-spec SPEC   pip requirement for jax (default: "jax[tpu]")  [JAX_PIP_SPEC]
      --max-ship-mb N   refuse to copy the checkout when the files to ship add up
                        to more than N MB (default: 64)                 [MAX_SHIP_MB]
      --reinstall       pip install again even if done before
      --no-setup        skip copy/clone and install; only run the job
      --setup-only      copy/clone and install, do not run the job
      --dry-run         print the gcloud commands instead of running them
  -h, --help            this text

Everything after `--` is passed to ttc_jax.run, e.g. --config.train.steps=2000
--config.mesh.shape='(-1,1,1)'.

Examples:
  scripts/launch_tpu_vm.sh -t my-v4-32 -z us-central2-b -w /mnt/shared/runs/paper
  TPU_NAME=my-v5e-8 ZONE=us-west4-a WORKDIR=gs://my-bucket/runs/quick \
    scripts/launch_tpu_vm.sh -c configs/arith_quick.py -- --config.train.steps=5000
EOF
}

die() { echo "error: $*" >&2; echo "(scripts/launch_tpu_vm.sh --help for usage)" >&2; exit 2; }

TPU_NAME="${TPU_NAME:-}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
CONFIG="${CONFIG:-configs/arith_paper.py}"
WORKDIR="${WORKDIR:-}"
REPO_URL="${REPO_URL:-}"
REPO_REF="${REPO_REF:-}"
JAX_PIP_SPEC="${JAX_PIP_SPEC:-jax[tpu]}"
MAX_SHIP_MB="${MAX_SHIP_MB:-64}"
REINSTALL=0
SETUP=1
RUN=1
DRY_RUN=0
OVERRIDES=()

need_arg() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -t|--tpu) need_arg "$@"; TPU_NAME="$2"; shift 2 ;;
    -z|--zone) need_arg "$@"; ZONE="$2"; shift 2 ;;
    -p|--project) need_arg "$@"; PROJECT="$2"; shift 2 ;;
    -c|--config) need_arg "$@"; CONFIG="$2"; shift 2 ;;
    -w|--workdir) need_arg "$@"; WORKDIR="$2"; shift 2 ;;
    --repo) need_arg "$@"; REPO_URL="$2"; shift 2 ;;
    --ref) need_arg "$@"; REPO_REF="$2"; shift 2 ;;
    --jax-spec) need_arg "$@"; JAX_PIP_SPEC="$2"; shift 2 ;;
    --max-ship-mb) need_arg "$@"; MAX_SHIP_MB="$2"; shift 2 ;;
    --reinstall) REINSTALL=1; shift ;;
    --no-setup) SETUP=0; shift ;;
    --setup-only) RUN=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; OVERRIDES+=("$@"); break ;;
    --config.*) OVERRIDES+=("$1"); shift ;;
    *) die "unknown argument: $1" ;;
  esac
done

[[ -n "$TPU_NAME" ]] || die "no TPU name (--tpu or TPU_NAME)"
[[ -n "$ZONE" ]] || die "no zone (--zone or ZONE)"
if [[ $RUN -eq 1 ]]; then
  [[ -n "$WORKDIR" ]] || die "no workdir (--workdir or WORKDIR): a shared path or gs://BUCKET/PATH"
  [[ "$WORKDIR" == gs://* || "$WORKDIR" == /* ]] \
    || die "workdir must be absolute or gs://..., got '$WORKDIR' (each worker has its own home)"
fi
[[ "$MAX_SHIP_MB" =~ ^[0-9]+$ && "$MAX_SHIP_MB" -gt 0 ]] \
  || die "--max-ship-mb must be a positive whole number of MB, got '$MAX_SHIP_MB'"
for o in "${OVERRIDES[@]+"${OVERRIDES[@]}"}"; do
  [[ "$o" == --config.* ]] || die "extra arguments must look like --config.FIELD=VALUE, got '$o'"
done

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2016  # expanded on the workers, not here
REMOTE_DIR='$HOME/ttc_jax'

GCLOUD=(gcloud compute tpus tpu-vm)
LOC=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && LOC+=(--project "$PROJECT")

sq() {    # single-quotes one word for a POSIX shell
  local s="$1" q="'\\''"
  printf "'%s'" "${s//\'/$q}"
}

qa() {    # quotes one word only where a shell needs it
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"; else sq "$1"; fi
}

run() {   # prints, or runs, one command
  if [[ $DRY_RUN -eq 1 ]]; then
    local a out=""
    for a in "$@"; do out+="$(qa "$a") "; done
    echo "${out% }"
  else
    "$@"
  fi
}

ship_list() {   # NUL-separated paths the workers need: tracked files that exist, plus
                # untracked (not ignored) source files under ttc_jax/ and configs/
  {
    git ls-files -z --cached
    git ls-files -z --others --exclude-standard -- ':(glob)ttc_jax/**/*.py' \
      ':(glob)configs/**/*.py' ':(glob)configs/**/*.json'
  } | while IFS= read -r -d '' f; do [[ -f "$f" ]] && printf '%s\0' "$f"; done
}

check_ship_size() {   # check_ship_size LIST_FILE: exit 2, naming the biggest entries, when
                      # the files in LIST_FILE add up to more than MAX_SHIP_MB
  local report
  report="$(xargs -0 wc -c < "$1" | awk -v limit="$((MAX_SHIP_MB * 1000000))" '
    $2 == "total" && NF == 2 { next }
    { size = $1; $1 = ""; path = substr($0, 2); n = split(path, part, "/")
      entry = (n > 2) ? part[1] "/" part[2] "/" : path
      by[entry] += size; total += size }
    END { if (total <= limit) exit 0
          printf "the files to ship add up to %.1f MB, over the limit of %.0f MB; biggest entries:\n",
                 total / 1e6, limit / 1e6
          for (e in by) printf "  %10.1f MB  %s\n", by[e] / 1e6, e
          exit 1 }')" && return 0
  { head -n 1 <<<"$report"; tail -n +2 <<<"$report" | sort -rn | head -n 8
    echo "Commit or delete what should not travel, add it to .gitignore, or raise --max-ship-mb."
  } >&2
  exit 2
}

on_all_workers() {   # on_all_workers SCRIPT: runs SCRIPT with bash on every worker
  run "${GCLOUD[@]}" ssh "$TPU_NAME" "${LOC[@]}" --worker=all --command="bash -c $(sq "$1")"
}

if [[ $SETUP -eq 1 ]]; then
  if [[ -n "$REPO_URL" ]]; then
    fetch="if [ -d $REMOTE_DIR/.git ]; then git -C $REMOTE_DIR fetch -q --all; \
else git clone -q $(qa "$REPO_URL") $REMOTE_DIR; fi"
    [[ -n "$REPO_REF" ]] && fetch+="; git -C $REMOTE_DIR checkout -q $(qa "$REPO_REF")"
    on_all_workers "set -euo pipefail; $fetch"
  else
    # this checkout's source (ship_list), never a local environment or a run directory
    archive="$(mktemp -t ttc_jax_src.XXXXXX.tar.gz)"
    files="$(mktemp -t ttc_jax_files.XXXXXX)"
    trap 'rm -f "$archive" "$files"' EXIT
    (cd "$REPO_ROOT" && ship_list > "$files" && check_ship_size "$files")
    if [[ $DRY_RUN -eq 0 ]]; then
      (cd "$REPO_ROOT" && tar -czf "$archive" --null -T "$files")
    fi
    run "${GCLOUD[@]}" scp "$archive" "$TPU_NAME:/tmp/ttc_jax_src.tar.gz" "${LOC[@]}" --worker=all
    on_all_workers "set -euo pipefail; mkdir -p $REMOTE_DIR; tar -xzf /tmp/ttc_jax_src.tar.gz -C $REMOTE_DIR"
  fi
  marker="$REMOTE_DIR/.ttc_jax_installed"
  install="set -euo pipefail; cd $REMOTE_DIR; \
if [ $REINSTALL -eq 1 ] || [ ! -f $marker ]; then \
python3 -m pip install -q -U pip && \
python3 -m pip install -q -e . $(qa "$JAX_PIP_SPEC") && touch $marker; fi; \
python3 -c 'import jax, ttc_jax; print(jax.__version__)'"
  on_all_workers "$install"
fi

if [[ $RUN -eq 1 ]]; then
  remote_workdir="$WORKDIR"
  mount=""
  if [[ "$WORKDIR" == gs://* ]]; then
    path="${WORKDIR#gs://}"
    bucket="${path%%/*}"
    rest="${path#"$bucket"}"
    mnt="/tmp/ttc_gcs/$bucket"
    remote_workdir="$mnt$rest"
    mount="command -v gcsfuse >/dev/null || { echo gcsfuse is not installed on this worker >&2; exit 1; }; \
mkdir -p $mnt; mountpoint -q $mnt || gcsfuse --implicit-dirs $(qa "$bucket") $mnt; "
  fi
  args=(python3 -m ttc_jax.run --config "$CONFIG" --workdir "$remote_workdir" --no_progress
        "${OVERRIDES[@]+"${OVERRIDES[@]}"}")
  job="set -euo pipefail; ${mount}cd $REMOTE_DIR; export TTC_JAX_DISTRIBUTED=1; \
$(for a in "${args[@]}"; do qa "$a"; printf ' '; done) 2>&1 | tee -a \$HOME/ttc_jax_run.log"
  on_all_workers "$job"
fi
