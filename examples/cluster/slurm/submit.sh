#!/usr/bin/env bash
# Submits the whole pipeline: TASKS profile slices as an array, the merge once all succeeded, optionally
# EVAL_TASKS shards measuring the front on held-out tokens, then the allocation and the front.
#   PMQ=/path/to/pmq MODEL=/shared/Mixtral-8x7B CALIB=/shared/calib.u32 WORK=/shared/run TASKS=8 \
#       [EVAL=/shared/heldout.u32 EVAL_TASKS=4] bash examples/cluster/slurm/submit.sh [sbatch options, e.g. -p cpu]
# Prints the job ids. Extra `pmq profile` options go in PMQ_PROFILE_ARGS, extra measured-sweep options in
# PMQ_SWEEP_ARGS; BITS, FROM, TO, POINTS steer the allocation step.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${MODEL:?}" "${CALIB:?}" "${WORK:?}"
tasks=${TASKS:-4}
mkdir -p "$WORK"
export MODEL CALIB WORK PMQ="${PMQ:-pmq}"
submit() { # dependency, script, sbatch options…
    local dependency=$1 script=$2
    shift 2
    local id
    id=$(sbatch --parsable --chdir="$WORK" --export=ALL ${dependency:+--dependency=afterok:$dependency} \
        ${dependency:+--kill-on-invalid-dep=yes} "$@" "$here/$script")
    echo "${id%%;*}"
}
array=$(submit "" profile-array.sbatch --array=0-$((tasks - 1)) "$@")
merge=$(submit "$array" merge.sbatch "$@")
last=$merge
line="profile array $array ($tasks tasks) → merge $merge"
if [ -n "${EVAL:-}" ] && [ "${EVAL_TASKS:-0}" -gt 0 ]; then
    export EVAL
    evaluate=$(submit "$merge" evaluate-array.sbatch --array=0-$((EVAL_TASKS - 1)) "$@")
    last=$evaluate
    line="$line → evaluate array $evaluate ($EVAL_TASKS tasks)"
fi
allocate=$(submit "$last" allocate.sbatch "$@")
echo "$line → allocate $allocate"
