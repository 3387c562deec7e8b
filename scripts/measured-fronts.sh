#!/usr/bin/env bash
# The measured-front figures of the README ("Measured fronts"): for each example model, profile with a
# quantization cache, then quantize the 2.5-bit allocation sequentially and with float propagation,
# assemble it from the cache (byte-identical to the float-propagated one), evaluate both, and measure
# a 16-point front on every held-out token. Outputs in out/fronts/. About 25 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product pmq --static-swift-stdlib
pmq=.build/release/pmq
for model in examples/model examples/model-fine; do
    dir=out/fronts/$(basename "$model")
    rm -rf "$dir" && mkdir -p "$dir"
    echo "==== $model"
    /usr/bin/time -f "profile %e s" $pmq profile --model "$model" --calib "$model/calib.u32" --cache "$dir/cache" --out "$dir/profile.json" --quiet
    $pmq solve --profile "$dir/profile.json" --bits 2.5 --out "$dir/a25.json" | tail -1
    /usr/bin/time -f "quantize (sequential) %e s" $pmq quantize --model "$model" --allocation "$dir/a25.json" --calib "$model/calib.u32" --out "$dir/sequential" --quiet
    /usr/bin/time -f "quantize --float-propagation %e s" $pmq quantize --model "$model" --allocation "$dir/a25.json" --calib "$model/calib.u32" --float-propagation --out "$dir/float-propagated" --quiet
    /usr/bin/time -f "assemble %e s" $pmq assemble --model "$model" --allocation "$dir/a25.json" --cache "$dir/cache" --out "$dir/assembled"
    diff -r "$dir/float-propagated" "$dir/assembled" && echo "assembled == quantize --float-propagation, byte for byte"
    echo "sequential:"; $pmq eval --model "$dir/sequential" --tokens "$model/eval.u32" --quiet | grep perplexity
    echo "assembled:"; $pmq eval --model "$dir/assembled" --tokens "$model/eval.u32" --quiet | grep perplexity
    /usr/bin/time -f "sweep --evaluate %e s, peak %M KB" $pmq sweep --profile "$dir/profile.json" --from 1.5 --to 3.0 --points 16 \
        --out "$dir/front" --evaluate "$model/eval.u32" --model "$model" --cache "$dir/cache" --quiet | tail -1
    $pmq table --front "$dir/front/front.json" --out "$dir/front.md"
done
