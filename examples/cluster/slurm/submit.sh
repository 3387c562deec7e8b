#!/usr/bin/env bash
# Submits the whole pipeline: TASKS profile slices as an array, the merge once all succeeded, then the allocation.
#   PMQ=/path/to/pmq MODEL=/shared/Mixtral-8x7B CALIB=/shared/calib.u32 WORK=/shared/run TASKS=8 \
#       bash examples/cluster/slurm/submit.sh [extra sbatch options, e.g. --partition=cpu]
# Prints the three job ids. Extra `pmq profile` options go in PMQ_PROFILE_ARGS; BITS, FROM, TO, POINTS, EVAL
# steer the allocation step.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${MODEL:?}" "${CALIB:?}" "${WORK:?}"
tasks=${TASKS:-4}
mkdir -p "$WORK"
export MODEL CALIB WORK PMQ="${PMQ:-pmq}"
array=$(sbatch --parsable --chdir="$WORK" --array=0-$((tasks - 1)) --export=ALL "$@" "$here/profile-array.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable --chdir="$WORK" --dependency=afterok:"$array" --kill-on-invalid-dep=yes --export=ALL "$@" \
    "$here/merge.sbatch")
merge=${merge%%;*}
allocate=$(sbatch --parsable --chdir="$WORK" --dependency=afterok:"$merge" --kill-on-invalid-dep=yes --export=ALL \
    "$@" "$here/allocate.sbatch")
echo "profile array $array ($tasks tasks) → merge $merge → allocate ${allocate%%;*}"
