#!/usr/bin/env bash
# Set up a fresh machine, build pmq (release) and run the main job on the shipped example model
# (examples/model: a small Mixtral-architecture MoE trained on the Python documentation):
# evaluate it, profile its experts, allocate 2.5 bits per expert, sweep 1.5–3.0 bits into a
# Pareto front, and generate a little text. Then the same allocation on the large synthetic
# Mixtral-8x7B-shaped profile.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product pmq
pmq=.build/release/pmq
model=examples/model
mkdir -p out
echo "== held-out evaluation of the example model"
$pmq eval --model "$model" --tokens "$model/eval.u32" --json out/eval.json
echo "== profile: routing statistics and GPTQ error per expert and width"
$pmq profile --model "$model" --calib "$model/calib.u32" --widths 1,2,3 --out out/profile.json
echo "== allocate 2.5 bits per expert"
$pmq solve --profile out/profile.json --bits 2.5 --out out/allocation-2.5bits.json
echo "== Pareto front 1.5–3.0 bits"
$pmq sweep --profile out/profile.json --from 1.5 --to 3.0 --points 31 --out out/front
echo "== generate"
$pmq generate --model "$model" --prompt "The Python tutorial" --max-new-tokens 48
echo "== the same allocation on the Mixtral-8x7B-shaped synthetic profile"
$pmq solve --profile examples/profiles/synthetic-mixtral-8x7b.json --bits 2.5 --out out/allocation-synthetic-2.5bits.json | tail -3
