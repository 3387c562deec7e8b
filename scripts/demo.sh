#!/usr/bin/env bash
# Set up a fresh machine, build pmq (release) and run the main job on the shipped example:
# allocate 2.5 bits per expert, then sweep 1.5–3.0 bits into a Pareto front.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product pmq
pmq=.build/release/pmq
profile=examples/profiles/synthetic-mixtral-8x7b.json
mkdir -p out
$pmq solve --profile "$profile" --bits 2.5 --out out/allocation-2.5bits.json
$pmq sweep --profile "$profile" --from 1.5 --to 3.0 --points 31 --out out/front
