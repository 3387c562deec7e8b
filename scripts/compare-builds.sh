#!/usr/bin/env bash
# Benchmarks two pmq builds side by side, alternating in one time window (this host is noisy: compare
# medians over rounds, never single runs). Used to show that a change costs no speed.
#   bash scripts/compare-builds.sh OLD/pmq NEW/pmq BF16_MODEL PACKED_MODEL [ROUNDS]
# BF16_MODEL/PACKED_MODEL: e.g. tools/fixtures/make_synthetic_mixtral.py /tmp/synth-mixtral --layers 4
# --hidden 512 --intermediate 1792, and `pmq quantize --model /tmp/synth-mixtral --uniform 4 --calib
# examples/model/calib.u32 --samples 8 --seq-len 128 --out /tmp/synth4`.
set -u
old=$1 new=$2 bf16=$3 packed=$4 rounds=${5:-3}
for round in $(seq "$rounds"); do
    for side in old new; do
        pmq=${!side}
        echo "### round $round $side runtime-bf16"
        $pmq bench runtime --model "$bf16" --prefill 64 --decode 32 --repeats 3 --skip-reference | grep SIMD
        echo "### round $round $side runtime-packed"
        $pmq bench runtime --model "$packed" --prefill 64 --decode 32 --repeats 3 --skip-reference | grep SIMD
        echo "### round $round $side packed"
        $pmq bench packed --repeats 11 --prefill-repeats 3 | grep -vE '^$'
        echo "### round $round $side gptq"
        $pmq bench gptq --repeats 1 | grep -E 'bits:|widths from one|SGEMM'
        echo "### round $round $side solver"
        $pmq bench solver --repeats 3 --sweep-repeats 1 --time-limit 2 --points 11
    done
done
