#!/usr/bin/env python3
"""pmq against llama.cpp on the same checkpoint, same threads, same machine: decode and prefill tokens/s.

    tools/.venv/bin/python tools/bench_vs_llama.py --model DIR --calib TOKENS.u32 [--work DIR]
        [--threads 2] [--rounds 4] [--prompt 128] [--generate 128] [--decode-prompt 16] [--widths 4,3,2]
        [--default-only] [--depth N]
        [--llama-src DIR]

What it does, all under --work (default /tmp/pmq-vs-llama; every step is skipped when its output exists):
1. llama.cpp: the sources vendored in llama-cpp-python 0.3.36 (downloaded from PyPI unless --llama-src),
   built with cmake (pip's, installed into this venv if missing) for this CPU's instruction sets
   (AVX2, FMA, F16C, and AVX-512 F/VBMI/VNNI/BF16 where /proc/cpuinfo lists them) but without AMX: with
   GGML_NATIVE on this machine's Xeon, llama-bench crashed (SIGSEGV in ggml_backend_amx_mul_mat) on Q4_0.
   Weight repacking (llama.cpp's default) stays on. Targets: llama-bench and llama-quantize.
2. GGUF: convert_hf_to_gguf.py writes the checkpoint as BF16 (an unknown BPE pre-tokenizer is taken as
   "default", and without a tokenizer.model the BPE tokenizer.json is used: tokenization does not enter a
   speed test), then llama-quantize makes F16, Q4_0, Q3_K_S, Q2_K.
3. pmq: `pmq quantize --uniform W` at each width (GPTQ, group 128; --samples 16 windows of 512 tokens).
4. Rounds alternate pmq and llama.cpp in one time window: `llama-bench -p P -n G -t T` (its decode, tg G,
   starts from an empty context), and pmq twice: `pmq bench runtime --prefill P --decode 1` for prefill,
   `--prefill D --decode G` for decode (G tokens after a D-token prompt, D = 16: the issue's definition;
   decoding after the P-token prompt would attend over up to P + G positions where llama-bench's tg
   attends over at most G). Medians of the rounds are printed as a Markdown table with the ratios of the
   medians, and beside them the median and range of the per-round ratios (a round's two runs are close in
   time, so they share the host's speed of the moment). --default-only skips pmq's non-default rows.
   --depth N measures decode after an N-token context on both sides instead (pmq `--prefill N --decode G`,
   `llama-bench -p 0 -n G -d N`), where attention over the cache weighs; prefill is measured as above.

The checkpoint directory needs a tokenizer.json for the conversion (random checkpoints from
tools/fixtures/make_synthetic_mixtral.py have the example model's vocabulary: copy
examples/model/tokenizer.json into it). Not run by CI: llama.cpp's build alone takes minutes.
"""
import argparse
import hashlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PMQ = ROOT / ".build" / "release" / "pmq"
LLAMA_VERSION = "0.3.36"
LLAMA_FORMATS = [("BF16", None), ("F16", "F16"), ("Q4_0", "Q4_0"), ("Q3_K_S", "Q3_K_S"), ("Q2_K", "Q2_K")]


def run(command, **kwargs):
    print("+", " ".join(str(c) for c in command), file=sys.stderr, flush=True)
    return subprocess.run([str(c) for c in command], check=True, **kwargs)


def llama_sources(work: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    source = work / "llama.cpp"
    if (source / "CMakeLists.txt").exists():
        return source
    # The simple index (PEP 503), which pip itself reads: some networks reach it and not the JSON API.
    page = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/").read().decode()
    name = f"llama_cpp_python-{LLAMA_VERSION}.tar.gz"
    match = re.search(r'href="([^"]*/' + re.escape(name) + r')#sha256=([0-9a-f]{64})"', page)
    if not match:
        sys.exit(f"bench_vs_llama: {name} not listed on https://pypi.org/simple/llama-cpp-python/")
    url, digest = match.group(1), match.group(2)
    print(f"downloading {url}", file=sys.stderr)
    data = urllib.request.urlopen(url).read()
    if hashlib.sha256(data).hexdigest() != digest:
        sys.exit(f"bench_vs_llama: {url}: sha256 does not match the index's")
    archive = tarfile.open(fileobj=io.BytesIO(data))
    prefix = archive.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
    members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
    for member in members:
        member.name = member.name[len(prefix):]
    archive.extractall(source, members=[m for m in members if m.name], filter="data")
    return source


def cpu_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def isa_options() -> list:
    """cmake options for this CPU's vector extensions, AMX left off."""
    flags = cpu_flags()
    wanted = [("AVX", "avx"), ("AVX2", "avx2"), ("FMA", "fma"), ("F16C", "f16c"), ("BMI2", "bmi2"),
              ("AVX512", "avx512f"), ("AVX512_VBMI", "avx512vbmi"), ("AVX512_VNNI", "avx512_vnni"),
              ("AVX512_BF16", "avx512_bf16")]
    return ["-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"] + [
        f"-DGGML_{name}={'ON' if flag in flags else 'OFF'}" for name, flag in wanted]


def build_llama(source: Path, work: Path) -> Path:
    build = work / "llama-build-noamx"
    binaries = build / "bin"
    if (binaries / "llama-bench").exists() and (binaries / "llama-quantize").exists():
        return binaries
    cmake = shutil.which("cmake") or str(Path(sys.executable).parent / "cmake")
    if not Path(cmake).exists():
        run([sys.executable, "-m", "pip", "install", "-q", "cmake"])
    run([cmake, "-S", source, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
         "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"] + isa_options())
    run([cmake, "--build", build, "--target", "llama-bench", "llama-quantize", "-j", str(os.cpu_count() or 2)])
    return binaries


CONVERT = """
import sys
from pathlib import Path
sys.path[:0] = [{source!r}, {gguf!r}]
sys.argv = ["convert_hf_to_gguf.py"] + {args!r}
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "default"
if not (Path({model!r}) / "tokenizer.model").exists():
    def no_sentencepiece(self):
        raise FileNotFoundError("no tokenizer.model: the BPE tokenizer.json is used")
    base.TextModel._set_vocab_sentencepiece = no_sentencepiece
import convert_hf_to_gguf
convert_hf_to_gguf.main()
"""


def gguf_models(source: Path, binaries: Path, model: Path, work: Path) -> dict:
    paths = {name: work / f"model-{name}.gguf" for name, _ in LLAMA_FORMATS}
    if not paths["BF16"].exists():
        script = CONVERT.format(source=str(source), gguf=str(source / "gguf-py"), model=str(model),
                                args=[str(model), "--outtype", "bf16", "--outfile", str(paths["BF16"])])
        run([sys.executable, "-c", script])
    for name, kind in LLAMA_FORMATS:
        if kind and not paths[name].exists():
            run([binaries / "llama-quantize", paths["BF16"], paths[name], kind], stdout=subprocess.DEVNULL)
    return paths


def pmq_models(model: Path, calib: str, widths, work: Path) -> dict:
    paths = {"bf16": model}
    for bits in widths:
        out = work / f"pmq-{bits}bit"
        if not out.exists():
            run([PMQ, "quantize", "--model", model, "--calib", calib, "--uniform", bits, "--samples", "16",
                 "--quiet", "--out", out])
        paths[f"{bits}-bit"] = out
    return paths


def pmq_run(model: Path, prompt: int, generate: int, options: list):
    """(decode, prefill) tokens/s of one `pmq bench runtime` run."""
    command = [PMQ, "bench", "runtime", "--model", model, "--prefill", prompt, "--decode", generate,
               "--repeats", "1", "--skip-reference"] + options
    text = run(command, capture_output=True, text=True).stdout
    found = re.search(r"SIMD kernels:\s+prefill\s+([\d.]+) tokens/s\s+decode\s+([\d.]+) tokens/s", text)
    if not found:
        raise SystemExit(f"no figures in pmq's output:\n{text}")
    return float(found.group(2)), float(found.group(1))


def pmq_speed(model: Path, prompt: int, generate: int, decode_prompt: int, options: list):
    """(decode of `generate` tokens after a `decode_prompt`-token prompt, prefill of `prompt` tokens)."""
    decode = pmq_run(model, decode_prompt, generate, options)[0]
    prefill = pmq_run(model, prompt, 1, options)[1]
    return decode, prefill


def llama_speed(binaries: Path, gguf: Path, prompt: int, generate: int, threads: int, depth: int = 0):
    """(decode, prefill) tokens/s, or None when llama-bench fails (it is reported in the table)."""
    try:
        return llama_speed_or_fail(binaries, gguf, prompt, generate, threads, depth)
    except subprocess.CalledProcessError as error:
        print(f"llama-bench failed on {gguf.name}: {error}", file=sys.stderr)
        return None


def llama_bench_rows(binaries: Path, gguf: Path, options: list, threads: int):
    text = run([binaries / "llama-bench", "-m", gguf] + options + ["-t", threads, "-r", "1", "-o", "json"],
               capture_output=True, text=True).stdout
    return json.loads(text)


def llama_speed_or_fail(binaries: Path, gguf: Path, prompt: int, generate: int, threads: int, depth: int = 0):
    """(decode, prefill) tokens/s; with a depth, decode in a second run after that many context tokens."""
    rows = llama_bench_rows(binaries, gguf, ["-p", prompt, "-n", 0 if depth else generate], threads)
    prefill = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0)
    if depth > 0:
        rows = llama_bench_rows(binaries, gguf, ["-p", 0, "-n", generate, "-d", depth], threads)
    decode = next(r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)
    return decode, prefill


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--calib", required=True)
    parser.add_argument("--work", default="/tmp/pmq-vs-llama")
    parser.add_argument("--llama-src")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--generate", type=int, default=128)
    parser.add_argument("--decode-prompt", type=int, default=16)
    parser.add_argument("--widths", default="4,3,2")
    parser.add_argument("--default-only", action="store_true",
                        help="only pmq's default path (no --attention-bits 16 / --exact-activations rows)")
    parser.add_argument("--depth", type=int, default=0,
                        help="decode after this many context tokens on both sides (llama-bench -d)")
    args = parser.parse_args()
    if not PMQ.exists():
        raise SystemExit(f"{PMQ}: build pmq first (swift build -c release --product pmq --static-swift-stdlib)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model).resolve()
    widths = [int(w) for w in args.widths.split(",")]
    source = llama_sources(work, args.llama_src)
    binaries = build_llama(source, work)
    ggufs = gguf_models(source, binaries, model, work)
    pmqs = pmq_models(model, args.calib, widths, work)
    # Rows: (label, pmq model, pmq options, llama.cpp formats compared). pmq runs packed models with
    # int8 activations (`--exact-activations`: float ones) and 8-bit attention and head
    # (`--attention-bits 16`: as stored, bf16 here) by default; llama.cpp quantizes attention like the experts.
    plan = [("bf16 / F16 / BF16", "bf16", [], ["F16", "BF16"])]
    names = {4: ["Q4_0"], 3: ["Q3_K_S"], 2: ["Q2_K"]}
    for bits in widths:
        formats = names.get(bits, [])
        plan.append((f"pmq {bits}-bit g128 (default)", f"{bits}-bit", [], formats))
        if args.default_only:
            continue
        plan.append((f"pmq {bits}-bit g128, --attention-bits 16", f"{bits}-bit", ["--attention-bits", "16"], formats))
        plan.append((f"pmq {bits}-bit g128, --exact-activations --attention-bits 16", f"{bits}-bit",
                     ["--exact-activations", "--attention-bits", "16"], formats))
    figures = {}
    for round_index in range(args.rounds):
        print(f"round {round_index + 1} of {args.rounds}", file=sys.stderr)
        for label, key, options, formats in plan:
            figures.setdefault(("pmq", label), []).append(
                pmq_speed(pmqs[key], args.prompt, args.generate, args.depth or args.decode_prompt, options))
            for name in formats:
                if ("llama", name) not in figures or len(figures[("llama", name)]) <= round_index:
                    figures.setdefault(("llama", name), []).append(
                        llama_speed(binaries, ggufs[name], args.prompt, args.generate, args.threads, args.depth))

    def median(key, index):
        values = [value[index] for value in figures[key] if value is not None]
        return statistics.median(values) if values else None

    def paired(label, name, index):
        """Median and range of the per-round ratios pmq ÷ llama.cpp (both runs of a round are minutes apart
        at most, so a ratio within a round is steadier than the ratio of medians on a host whose speed drifts)."""
        ratios = [mine[index] / theirs[index] for mine, theirs in zip(figures[("pmq", label)], figures[("llama", name)])
                  if mine is not None and theirs is not None]
        return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"

    context = (f"both after a {args.depth}-token context" if args.depth else
               f"pmq: after a {args.decode_prompt}-token prompt; llama-bench: from an empty context")
    print(f"{args.threads} threads; decode = {args.generate} tokens ({context}), prefill = {args.prompt} tokens; "
          f"medians of {args.rounds} rounds, pmq and llama.cpp alternating")
    print()
    print("| pmq format | pmq decode tok/s | pmq prefill tok/s | llama.cpp format | llama.cpp decode | "
          "llama.cpp prefill | pmq ÷ llama.cpp (decode, prefill) | per round: decode, prefill |")
    print("|---|---:|---:|---|---:|---:|---|---|")
    for label, _, _, formats in plan:
        decode, prefill = median(("pmq", label), 0), median(("pmq", label), 1)
        for name in formats or ["-"]:
            if name == "-":
                print(f"| {label} | {decode:.1f} | {prefill:.1f} | - | | | | |")
                continue
            other_decode, other_prefill = median(("llama", name), 0), median(("llama", name), 1)
            if other_decode is None:
                print(f"| {label} | {decode:.1f} | {prefill:.1f} | {name} | llama-bench failed | | | |")
                continue
            print(f"| {label} | {decode:.1f} | {prefill:.1f} | {name} | {other_decode:.1f} | {other_prefill:.1f} | "
                  f"{decode / other_decode:.2f}, {prefill / other_prefill:.2f} | "
                  f"{paired(label, name, 0)}, {paired(label, name, 1)} |")


if __name__ == "__main__":
    main()
