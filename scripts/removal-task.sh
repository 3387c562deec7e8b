#!/usr/bin/env bash
# Task-specific removal (PreMoe's question) on the fine-grained example model: profile it on its own
# calibration text (Linux kernel documentation) and on another (Python documentation, tokenized with the
# model's tokenizer), allocate 2.0 bits with width 0 from each, pack each with its own calibration text,
# and evaluate both on both held-out texts. Needs `apt-get install python3.11-doc` (the Python text) and
# out/removal/model-fine/profile.json from scripts/removal.sh. Table: out/removal/task/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .build/release/pmq ] || swift build -c release --product pmq --static-swift-stdlib
pmq=.build/release/pmq
model=examples/model-fine
out=out/removal/task
mkdir -p "$out"
python3 tools/example_model/prepare_corpus.py > /dev/null  # Python docs split (model 1's corpus)
for split in calibration evaluation; do
    $pmq tokenize --model "$model" --text "tools/example_model/work/$split.txt" --out "$out/python-$split.u32"
done
[ -f "$out/profile-python.json" ] || $pmq profile --model "$model" --calib "$out/python-calibration.u32" \
    --widths 0,1,2,3 --out "$out/profile-python.json" --quiet
cp out/removal/model-fine/profile.json "$out/profile-linux.json"
cp "$model/calib.u32" "$out/linux-calibration.u32"
cp "$model/eval.u32" "$out/linux-evaluation.u32"
table="$out/table.md"
echo "| calibrated on | removed experts (per layer) | Linux held-out perplexity | Python held-out perplexity |" > "$table"
echo "|---|---|---|---|" >> "$table"
for text in float linux python; do
    if [ "$text" = float ]; then
        dir=$model
    else
        $pmq solve --profile "$out/profile-$text.json" --bits 2.0 --out "$out/allocation-$text.json" > /dev/null
        rm -rf "$out/packed-$text"
        $pmq quantize --model "$model" --allocation "$out/allocation-$text.json" --calib "$out/$text-calibration.u32" \
            --samples 32 --out "$out/packed-$text" --quiet > /dev/null
        dir=$out/packed-$text
    fi
    for held in linux python; do
        $pmq eval --model "$dir" --tokens "$out/$held-evaluation.u32" --max-tokens 65536 --json "$out/eval-$text-$held.json" \
            --quiet > /dev/null
    done
    python3 - "$out" "$text" >> "$table" <<'PY'
import json, os, sys
out, text = sys.argv[1], sys.argv[2]
ppl = {h: json.load(open(f"{out}/eval-{text}-{h}.json"))["perplexity"] for h in ("linux", "python")}
removed = "—"
if text != "float":
    layers = json.load(open(f"{out}/allocation-{text}.json"))["layers"]
    removed = "; ".join(f"{l['index']}: " + ",".join(str(e["index"]) for e in l["experts"] if e["bits"] == 0)
                        for l in layers)
print(f"| {text} | {removed} | {ppl['linux']:.3f} | {ppl['python']:.3f} |")
PY
done
cat "$table"
