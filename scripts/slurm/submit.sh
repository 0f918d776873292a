#!/usr/bin/env bash
# Submits a stored attribution run to SLURM: an N-task featurisation array, then one job that
# merges and scores once every task has ended. Prints the two job ids.
#
#   scripts/slurm/submit.sh PROGRAM WORK N [sbatch options for both jobs...]
#
# PROGRAM: the attribution binary (e.g. target/release/examples/cluster), WORK: its work
# directory on shared storage, already prepared (`PROGRAM prepare WORK`). Logs go to
# WORK/logs/. Extra options (e.g. --partition=cpu --time=04:00:00) go to both jobs; options
# given here override the scripts' #SBATCH lines.
set -euo pipefail
[[ $# -ge 3 ]] || {
    echo "usage: $0 PROGRAM WORK N [sbatch options...]" >&2
    exit 2
}
program=$(realpath "$1")
work=$(realpath "$2")
n=$3
shift 3
here=$(dirname "$(realpath "$0")")
mkdir -p "$work/logs"
feat=$(sbatch --parsable --array=0-$((n - 1)) --output="$work/logs/featurize-%A_%a.out" "$@" \
    "$here/featurize.sbatch" "$program" "$work")
score=$(sbatch --parsable --dependency=afterany:"$feat" --output="$work/logs/score-%j.out" "$@" \
    "$here/score.sbatch" "$program" "$work" "$n")
echo "featurize=$feat score=$score"
