#!/usr/bin/env bash
# Width 0 (expert removal) against the best allocation without it, at the same budgets, on both example
# models: profile with widths 0,1,2,3; for each budget solve with widths 1,2,3 and with 0,1,2,3, pack
# both (GPTQ, 32 calibration windows as scripts/demo.sh), evaluate both on the held-out tokens; then a
# front from 0.5 to 3.0 bits with width 0. Figures: out/removal/<model>/table.md (README "Removing experts").
#   bash scripts/removal.sh                    # all held-out tokens
#   EVAL_TOKENS=32768 bash scripts/removal.sh  # the first 32,768
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .build/release/pmq ] || swift build -c release --product pmq --static-swift-stdlib
pmq=.build/release/pmq
eval_tokens=${EVAL_TOKENS:-0}
limit=()
[ "$eval_tokens" != 0 ] && limit=(--max-tokens "$eval_tokens")
for name in model model-fine; do
    model=examples/$name
    out=out/removal/$name
    mkdir -p "$out"
    [ -f "$out/profile.json" ] || $pmq profile --model "$model" --calib "$model/calib.u32" --widths 0,1,2,3 \
        --out "$out/profile.json" --quiet
    table="$out/table.md"
    echo "| budget | widths | removed | expert bytes | held-out perplexity |" > "$table"
    echo "|---|---|---|---|---|" >> "$table"
    for bits in 2.0 2.5; do
        for widths in 1,2,3 0,1,2,3; do
            tag="$bits-${widths//,/}"
            $pmq solve --profile "$out/profile.json" --bits "$bits" --widths "$widths" \
                --out "$out/allocation-$tag.json" > /dev/null
            rm -rf "$out/packed-$tag"
            $pmq quantize --model "$model" --allocation "$out/allocation-$tag.json" --calib "$model/calib.u32" \
                --samples 32 --out "$out/packed-$tag" --quiet > /dev/null
            $pmq eval --model "$out/packed-$tag" --tokens "$model/eval.u32" "${limit[@]}" --json "$out/eval-$tag.json" \
                --quiet > /dev/null
            python3 - "$out/allocation-$tag.json" "$out/eval-$tag.json" "$bits" "$widths" >> "$table" <<'PY'
import json, sys
allocation, evaluation = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
removed = allocation["widthCounts"].get("0", 0)
print(f"| {sys.argv[3]} | {sys.argv[4]} | {removed} | {allocation['bytes']:,} | {evaluation['perplexity']:.3f} |")
PY
        done
    done
    $pmq sweep --profile "$out/profile.json" --from 0.5 --to 3.0 --points 11 --out "$out/front" > /dev/null
    cat "$table"
done
