#!/usr/bin/env bash
# Set up a fresh machine, build pmq (release) and run the main job on the two shipped example
# models (examples/model: a small Mixtral-architecture MoE trained on the Python documentation, results
# in out/; examples/model-fine: a fine-grained Qwen3-MoE, 32 experts top-4, results in out/fine/):
# profile the experts, allocate 2.5 bits per expert (PMQ) and a size-matched baseline, sweep a
# measured Pareto front (from the profile's quantization cache), GPTQ-quantize and pack each allocation, train OTP gates, evaluate every variant
# on held-out text and print the comparison table. Then the same allocation on the large
# synthetic Mixtral-8x7B-shaped profile.
#   EVAL_TOKENS=0 bash scripts/demo.sh   evaluates on the whole held-out file (the README table)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product pmq --static-swift-stdlib
pmq=.build/release/pmq
eval_tokens=${EVAL_TOKENS:-32768}
rm -rf out
limit=()
[ "$eval_tokens" != 0 ] && limit=(--max-tokens "$eval_tokens")
demo() { # model out keep — the whole chain on one example model
    local model=$1 out=$2 keep=$3
    mkdir -p "$out"
    evaluate() { # name model [eval flags…]
        local name=$1 dir=$2
        shift 2
        echo "== eval: $name"
        $pmq eval --model "$dir" --tokens "$model/eval.u32" "${limit[@]}" --decode-tokens 128 --json "$out/eval-$name.json" --quiet "$@" | grep -E "perplexity|experts per token|decode"
    }
    echo "==== $model"
    echo "== profile: routing statistics, GPTQ error and routing-weighted output error per expert and width, each layer's loss curve"
    $pmq profile --model "$model" --calib "$model/calib.u32" --widths 1,2,3 --cache "$out/cache" --out "$out/profile.json"
    echo "== allocate 2.5 bits per expert: PMQ, and size-matched baselines that ignore the measured errors"
    $pmq solve --profile "$out/profile.json" --bits 2.5 --out "$out/allocation-pmq.json" | tail -1
    $pmq solve --profile "$out/profile.json" --bits 2.5 --importance frequency --out "$out/allocation-frequency.json" | tail -1
    $pmq solve --profile "$out/profile.json" --bits 2.5 --importance random --seed 1 --out "$out/allocation-random.json" | tail -1
    echo "== measured Pareto front 1.5–3.0 bits: 16 points, each assembled from the quantization cache and evaluated"
    $pmq sweep --profile "$out/profile.json" --from 1.5 --to 3.0 --points 16 --out "$out/front" \
        --evaluate "$model/eval.u32" --model "$model" --cache "$out/cache" "${limit[@]}" --quiet | tail -1
    $pmq table --front "$out/front/front.json" --out "$out/front.md"
    echo "== quantize and pack"
    for bits in 2 3; do $pmq quantize --model "$model" --uniform "$bits" --calib "$model/calib.u32" --samples 32 --out "$out/uniform-$bits" --quiet; done
    for name in pmq frequency random; do
        $pmq quantize --model "$model" --allocation "$out/allocation-$name.json" --calib "$model/calib.u32" --samples 32 --out "$out/$name" --quiet
    done
    echo "== OTP gates for the PMQ model (keep $keep of the top-k slots model-wide, trained on each drop's measured effect on the next token) and ODP calibrated to the same fraction"
    $pmq otp train --model "$out/pmq" --calib "$model/calib.u32" --keep "$keep" --seed 0 --quiet
    evaluate float "$model"
    evaluate uniform-2 "$out/uniform-2"
    evaluate uniform-3 "$out/uniform-3"
    evaluate frequency "$out/frequency"
    evaluate random "$out/random"
    evaluate pmq "$out/pmq"
    evaluate pmq-otp "$out/pmq" --prune otp
    evaluate pmq-odp "$out/pmq" --prune odp
    evaluate pmq-odp-matched "$out/pmq" --prune odp-matched
    echo "== the table for $model (held-out tokens: ${eval_tokens/#0/all})"
    $pmq table --out "$out/table.md" \
        "float (f32)=$out/eval-float.json" "uniform 2-bit=$out/eval-uniform-2.json" "uniform 3-bit=$out/eval-uniform-3.json" \
        "baseline: frequency only, 2.5 bits=$out/eval-frequency.json" "baseline: random, 2.5 bits=$out/eval-random.json" \
        "PMQ 2.5 bits=$out/eval-pmq.json" "PMQ 2.5 bits + OTP=$out/eval-pmq-otp.json" "PMQ 2.5 bits + ODP=$out/eval-pmq-odp.json" \
        "PMQ 2.5 bits + ODP at OTP's per-layer fractions (diagnostic)=$out/eval-pmq-odp-matched.json"
    echo "== generate with the packed PMQ model"
    $pmq generate --model "$out/pmq" --prompt "The" --max-new-tokens 48
}
demo examples/model out 0.8
demo examples/model-fine out/fine 0.75
echo "== the same allocation on the Mixtral-8x7B-shaped synthetic profile"
$pmq solve --profile examples/profiles/synthetic-mixtral-8x7b.json --bits 2.5 --out out/allocation-synthetic-2.5bits.json | tail -3
