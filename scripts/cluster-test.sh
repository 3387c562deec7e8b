#!/usr/bin/env bash
# A real Slurm test on this machine (issue 16): installs slurm-wlm, munge and jq from Debian, starts munged,
# slurmctld and slurmd (one node, this machine's CPUs) in a private folder on private ports, then on both example
# models:
#   - one process: `pmq profile --cache` (the reference);
#   - 1 slice: the reference merged alone; 2 slices: `--slice I/2` run one after the other, merged;
#   - 4 slices: examples/cluster/slurm/submit.sh (a 4-task array, the merge job after it, the allocation job);
#     one task is requeued mid-run (`scontrol requeue`) and must continue from its OUT.partial/; on the first
#     model a 2-task evaluation array measures the front (`sweep --evaluate --shard`), which must equal the front
#     measured in one process;
# and requires every merged profile to equal the reference (timings aside, `jq`) and every cache to equal the
# reference cache byte for byte. It stops the daemons it started (by PID) on exit, and fails loudly if the
# cluster does not come up. Prints the 4-task array's wall time against the one process's.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export DEBIAN_FRONTEND=noninteractive
if ! command -v sbatch >/dev/null || ! command -v munged >/dev/null || ! command -v jq >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge jq >/dev/null
fi
swift build -c release --product pmq --static-swift-stdlib 2>&1 | tail -1
pmq=$root/.build/release/pmq

cluster=$(mktemp -d /tmp/pmq-slurm.XXXXXX)
chmod 755 "$cluster"
pids=()
cleanup() {
    status=$?
    if [ -n "${SLURM_CONF:-}" ] && [ -f "$SLURM_CONF" ]; then scancel --user="$(id -un)" 2>/dev/null || true; fi
    for pidfile in "$cluster/slurmd.pid" "$cluster/slurmctld.pid" "$cluster/munged.pid"; do
        if [ -s "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    if [ "$status" -ne 0 ]; then
        echo "cluster-test: FAILED (status $status); daemon logs:" >&2
        tail -n 20 "$cluster"/*.log >&2 2>/dev/null || true
    fi
    rm -rf "$cluster"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

# munge: our own key, socket and files (no system daemon is touched).
dd if=/dev/urandom of="$cluster/munge.key" bs=1024 count=1 status=none
chmod 600 "$cluster/munge.key"
munged --force --socket="$cluster/munge.sock" --key-file="$cluster/munge.key" --pid-file="$cluster/munged.pid" \
    --log-file="$cluster/munged.log" --seed-file="$cluster/munged.seed"

host=$(hostname -s)
cpus=$(nproc)
memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10))
port=$((20000 + RANDOM % 20000))
mkdir -p "$cluster/state" "$cluster/spool"
cat >"$cluster/slurm.conf" <<EOF
ClusterName=pmqtest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$cluster/munge.sock
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$cluster/state
SlurmdSpoolDir=$cluster/spool
SlurmctldPidFile=$cluster/slurmctld.pid
SlurmdPidFile=$cluster/slurmd.pid
SlurmctldLogFile=$cluster/slurmctld.log
SlurmdLogFile=$cluster/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MinJobAge=3600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=pmqtest Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$cluster/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
up=0
for _ in $(seq 60); do
    if [ "$(sinfo -h -o %t 2>/dev/null)" = "idle" ]; then up=1; break; fi
    sleep 1
done
if [ "$up" -ne 1 ]; then
    echo "cluster-test: the Slurm cluster did not come up within 60 s (sinfo: $(sinfo -h 2>&1 | head -1))" >&2
    exit 1
fi
echo "cluster-test: Slurm $(sinfo --version | cut -d' ' -f2) up: node $host, $cpus CPUs, ${memory} MB"

# Profile settings: small enough for CI by default, the same for every run (PMQ_PROFILE_ARGS overrides them:
# README "Profiling on a cluster" times the defaults with PMQ_PROFILE_ARGS="--widths 1,2,3").
export PMQ_PROFILE_ARGS="${PMQ_PROFILE_ARGS:---samples 16 --seq-len 128 --widths 0,2,3 --sensitivity-windows 4}"
same_profile() { # reference, candidate
    if ! diff <(jq -S 'del(.. | .seconds?)' "$1") <(jq -S 'del(.. | .seconds?)' "$2") >/dev/null; then
        echo "cluster-test: $2 differs from $1:" >&2
        diff <(jq -S 'del(.. | .seconds?)' "$1") <(jq -S 'del(.. | .seconds?)' "$2") | head -20 >&2
        exit 1
    fi
}
same_cache() {
    if ! diff -r "$1" "$2" >/dev/null; then
        echo "cluster-test: cache $2 differs from $1: $(diff -rq "$1" "$2" | head -3)" >&2
        exit 1
    fi
}
job_state() { scontrol show job "$1" | tr ' ' '\n' | sed -n 's/^JobState=//p' | sort -u | tr '\n' ' '; }

for model in examples/model examples/model-fine; do
    name=$(basename "$model")
    work=$cluster/work-$name
    mkdir -p "$work"
    chmod 777 "$work"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$pmq" profile --model "$root/$model" --calib "$root/$model/calib.u32" --cache "$work/single-cache" \
        --out "$work/single.json" --quiet $PMQ_PROFILE_ARGS >/dev/null
    single=$(awk "BEGIN {print $(date +%s.%N) - $start}")

    "$pmq" profile merge "$work/single.json" --cache "$work/single-cache" --out "$work/one.json" >/dev/null
    same_profile "$work/single.json" "$work/one.json"
    for index in 0 1; do
        # shellcheck disable=SC2086
        "$pmq" profile --model "$root/$model" --calib "$root/$model/calib.u32" --slice "$index/2" \
            --cache "$work/two-cache" --out "$work/two-$index.json" --quiet $PMQ_PROFILE_ARGS >/dev/null
    done
    "$pmq" profile merge "$work"/two-*.json --cache "$work/two-cache" --out "$work/two.json" >/dev/null
    same_profile "$work/single.json" "$work/two.json"
    same_cache "$work/single-cache" "$work/two-cache"

    # Four slices through Slurm: one CPU per task, so the node runs as many at once as it has CPUs.
    start=$(date +%s.%N)
    # The first model's front is also measured on held-out tokens by a 2-task evaluation array.
    evaluate_tasks=0
    [ "$name" = model ] && evaluate_tasks=2
    export PMQ_SWEEP_ARGS="--max-tokens 4096 --seq-len 256"
    ids=$(PMQ=$pmq MODEL=$root/$model CALIB=$root/$model/calib.u32 WORK=$work/slurm TASKS=4 BITS=2.5 \
        EVAL=$root/$model/eval.u32 EVAL_TASKS=$evaluate_tasks POINTS=6 \
        bash examples/cluster/slurm/submit.sh --cpus-per-task=1 --mem=2G)
    echo "cluster-test: $name: $ids"
    array=$(echo "$ids" | awk '{print $3}')
    merge=$(echo "$ids" | awk '{print $8}')
    evaluate=$(echo "$ids" | sed -n 's/.*evaluate array \([0-9]*\).*/\1/p')
    allocate=$(echo "$ids" | awk '{print $NF}')
    # Requeue task 0 once it has saved a finished layer: the rerun must continue from its OUT.partial/.
    requeued=0
    for _ in $(seq 600); do
        if ls "$work/slurm/slices/slice-0.json.partial"/layer-*.json >/dev/null 2>&1 &&
            [ "$(job_state "${array}_0")" = "RUNNING " ]; then
            scontrol requeue "${array}_0" && requeued=1
            # Once it is pending again, Slurm holds a requeued job back for about 2 minutes (BeginTime): let it
            # start at once.
            for _ in $(seq 200); do
                if [ "$(job_state "${array}_0")" = "PENDING " ]; then
                    scontrol update JobId="${array}_0" StartTime=now
                    break
                fi
                sleep 0.05
            done
            break
        fi
        [ -f "$work/slurm/slices/slice-0.json" ] && break
        sleep 0.1
    done
    merged_at=""
    for _ in $(seq 1800); do
        [ -z "$merged_at" ] && [ "$(job_state "$merge")" = "COMPLETED " ] && merged_at=$(date +%s.%N)
        state=$(job_state "$allocate")
        case "$state" in
        "COMPLETED ") break ;;
        *FAILED* | *CANCELLED* | *TIMEOUT* | *OUT_OF_MEMORY* | *NODE_FAIL*)
            echo "cluster-test: $name: allocation job $allocate ended $state" >&2
            cat "$work/slurm"/pmq-*.out >&2 || true
            exit 1
            ;;
        esac
        sleep 0.5
    done
    if [ "$(job_state "$allocate")" != "COMPLETED " ]; then
        echo "cluster-test: $name: the pipeline did not finish within 15 minutes" >&2
        exit 1
    fi
    tasks="${array}_0 ${array}_1 ${array}_2 ${array}_3 $merge"
    [ -n "$evaluate" ] && tasks="$tasks ${evaluate}_0 ${evaluate}_1"
    for task in $tasks; do
        if [ "$(job_state "$task")" != "COMPLETED " ]; then
            echo "cluster-test: $name: job $task is $(job_state "$task")" >&2
            exit 1
        fi
    done
    same_profile "$work/single.json" "$work/slurm/profile.json"
    same_cache "$work/single-cache" "$work/slurm/cache"
    test -s "$work/slurm/allocation.json" && test -s "$work/slurm/front/front.json"
    measured=""
    if [ -n "$evaluate" ]; then
        # The front the sharded measurements made equals one measured in one process.
        # shellcheck disable=SC2086
        "$pmq" sweep --profile "$work/slurm/profile.json" --from 1.5 --to 3.0 --points 6 --out "$work/front-local" \
            --evaluate "$root/$model/eval.u32" --model "$root/$model" --cache "$work/slurm/cache" --quiet \
            $PMQ_SWEEP_ARGS >/dev/null
        timings='del(.. | .seconds?, .assemblySeconds?, .evaluationSeconds?)'
        if ! diff <(jq -S "$timings" "$work/front-local/front.json") \
            <(jq -S "$timings" "$work/slurm/front/front.json") >/dev/null; then
            echo "cluster-test: $name: the sharded measured front differs from the one-process front" >&2
            exit 1
        fi
        measured=", measured front from 2 evaluation shards = one process's"
    fi
    slices=$(for index in 0 1 2 3; do jq -r '.seconds' "$work/slurm/slices/slice-$index.json"; done |
        awk '{printf "%s%.1f", (NR > 1 ? " " : ""), $1}')
    if [ "$requeued" -eq 1 ] && [ "$(cat "$work/slurm"/pmq-profile-*_0.out | grep -c "slice 0/4")" -lt 2 ]; then
        echo "cluster-test: $name: task 0 was requeued but did not run twice" >&2
        exit 1
    fi
    array_seconds=$(awk "BEGIN {print ${merged_at:-$(date +%s.%N)} - $start}")
    printf 'cluster-test: %s: merged profile = one-process profile for 1, 2 and 4 slices (4 through Slurm%s); ' \
        "$name" "$([ "$requeued" -eq 1 ] && echo ", task 0 requeued mid-run" || echo "")"
    printf 'caches identical%s; one process %.1f s, 4-task array + merge %.1f s (slices %s s)\n' "$measured" \
        "$single" "$array_seconds" "$slices"
done
echo "cluster-test: passed"
