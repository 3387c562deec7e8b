#!/usr/bin/env python3
"""Load a pmq packed directory with GPTQModel (torch kernel, CPU) and measure held-out perplexity.

    tools/.venv/bin/python tools/interop/load_with_gptqmodel.py out/uniform-3 [--max-tokens 4096]
        [--compare-weights] [--dtype float32|float16|bfloat16] [--raw] [--pmq /tmp/pmq-exp]

Perplexity: the first --max-tokens ids of --tokens in non-overlapping --seq-len windows; inside a
window position t predicts t+1, nothing crosses a window (as `pmq eval`).

pmq's directory does not load in GPTQModel 7.7 / transformers 5.23 as written (README.md here).
Unless --raw, the script loads a shim copy in --work (default: a temporary directory) that
changes only what blocks loading, never a packed tensor's bytes:
  1. config.json: float-typed fields that pmq wrote as JSON integers (`router_jitter_noise: 0`)
     are written back as floats (transformers' strict config validation rejects the int).
  2. tensor names and `dynamic` keys: `block_sparse_moe.` -> `mlp.`, `experts.E.w1/w2/w3` ->
     `experts.E.gate_proj/down_proj/up_proj` (the per-expert Linear names GPTQModel's defuser
     builds for Mixtral under transformers 5; quantized tensors are loaded by exact name).
  3. quantization_config.meta.quantizer = ["gptqmodel:0.9.0"]: GPTQModel refuses sym=False with
     checkpoint_format "gptq" (v1) unless the checkpoint claims a GPTQModel >= 0.9.0 producer.
     pmq writes GPTQModel's own v1 zero bytes, so the claim is true of the bytes.
--raw loads the directory unchanged (to record the error).

--dtype float32 (default; the precision of `pmq eval`): GPTQModel's TorchLinear accepts only
fp16/bf16, so the model is loaded in fp16 (fp16 scales are kept exactly) and then moved to
float32: scales cast (exact), float tensors re-read from the checkpoint (bf16 -> f32, exact),
rotary tables rebuilt in float32. float16 / bfloat16: GPTQModel's native path, left as loaded.

--compare-weights: every quantized linear's weight as GPTQModel dequantizes it
(`dequantize_weight()`, after its v1 -> v2 zero conversion) against
tools/fixtures/make_packed_fixtures.py `dequantize` on pmq's original tensors; prints the max
absolute difference and the number of modules that are not bit-identical.
"""
import argparse
import dataclasses
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Checkpoint (transformers 4 Mixtral) names -> GPTQModel/defuser runtime names.
TENSOR_RENAMES = [
    (r"\.block_sparse_moe\.", ".mlp."),
    (r"\.experts\.(\d+)\.w1\.", r".experts.\1.gate_proj."),
    (r"\.experts\.(\d+)\.w2\.", r".experts.\1.down_proj."),
    (r"\.experts\.(\d+)\.w3\.", r".experts.\1.up_proj."),
]
W_NAMES = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}


def rename_tensor(name):
    for pattern, repl in TENSOR_RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def rename_dynamic_key(key):
    """`+:^model\\.layers\\.0\\.block_sparse_moe\\.experts\\.1\\.w1$` -> `...mlp\\.experts\\.1\\.gate_proj$`."""
    key = key.replace(r"\.block_sparse_moe\.", r"\.mlp\.")
    for old, new in W_NAMES.items():
        key = re.sub(r"(\\\.experts\\\.\d+\\\.)" + old + r"\$", lambda m: m.group(1) + new + "$", key)
    return key


def float_fields(model_type):
    from transformers import CONFIG_MAPPING
    cls = CONFIG_MAPPING[model_type]
    return [f.name for f in dataclasses.fields(cls) if f.type is float]


def make_shim(src, dst):
    """Writes the shim copy of `src` into `dst`; returns the list of changes made."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    changes = []
    os.makedirs(dst, exist_ok=True)
    cfg = json.load(open(os.path.join(src, "config.json")))
    for name in float_fields(cfg["model_type"]):
        v = cfg.get(name)
        if isinstance(v, int) and not isinstance(v, bool):
            cfg[name] = float(v)
            changes.append(f"config.json: {name} {v} -> {float(v)}")

    files = [f for f in os.listdir(src) if f.endswith(".safetensors")]
    renamed = 0
    index = {}
    for fname in files:
        tensors = {}
        with safe_open(os.path.join(src, fname), "pt") as f:
            for k in f.keys():
                nk = rename_tensor(k)
                renamed += nk != k
                tensors[nk] = f.get_tensor(k)
                index[nk] = fname
        save_file(tensors, os.path.join(dst, fname), metadata={"format": "pt"})
    if renamed:
        changes.append(f"safetensors: {renamed} tensors renamed (block_sparse_moe->mlp, w1/w2/w3->gate/down/up_proj)")
    if os.path.exists(os.path.join(src, "model.safetensors.index.json")):
        idx = json.load(open(os.path.join(src, "model.safetensors.index.json")))
        idx["weight_map"] = {rename_tensor(k): v for k, v in idx["weight_map"].items()}
        json.dump(idx, open(os.path.join(dst, "model.safetensors.index.json"), "w"), indent=2)

    q = cfg["quantization_config"]
    dyn = q.get("dynamic") or {}
    new_dyn = {rename_dynamic_key(k): v for k, v in dyn.items()}
    n_dyn = sum(a != b for a, b in zip(dyn, new_dyn))
    if n_dyn:
        changes.append(f"dynamic: {n_dyn} of {len(dyn)} keys renamed")
    q["dynamic"] = new_dyn
    if not q.get("sym", True) and q.get("checkpoint_format", "gptq") == "gptq":
        q.setdefault("meta", {})["quantizer"] = ["gptqmodel:0.9.0"]
        changes.append('quantization_config.meta.quantizer = ["gptqmodel:0.9.0"] (sym=False v1 gate)')
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)
    json.dump(q, open(os.path.join(dst, "quantize_config.json"), "w"), indent=2)
    for f in os.listdir(src):
        if not os.path.exists(os.path.join(dst, f)):
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    return changes


def load_fixture_reader():
    path = os.path.join(ROOT, "tools", "fixtures", "make_packed_fixtures.py")
    spec = importlib.util.spec_from_file_location("make_packed_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def checkpoint_tensors(directory):
    from safetensors import safe_open
    out = {}
    for fname in sorted(os.listdir(directory)):
        if fname.endswith(".safetensors"):
            with safe_open(os.path.join(directory, fname), "pt") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
    return out


def quant_modules(model):
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    return {n: m for n, m in model.named_modules() if isinstance(m, BaseQuantLinear)}


def to_float32(model, shim_dir):
    """fp16-loaded GPTQModel model -> float32 compute with exact values (see module docstring)."""
    qmods = quant_modules(model)
    for m in qmods.values():
        m.scales.data = m.scales.data.float()
        if getattr(m, "bias", None) is not None:
            m.bias.data = m.bias.data.float()
        m.clear_weight_cache()
    ckpt = checkpoint_tensors(shim_dir)
    reloaded = 0
    for name, p in model.named_parameters():
        if any(name.startswith(q + ".") for q in qmods):
            continue
        if name in ckpt:
            p.data = ckpt[name].to(torch.float32)
            reloaded += 1
        else:
            p.data = p.data.float()
    # Tied or untied lm_head: the loop covers both; rotary tables are recomputed in float32.
    for mod_name, mod in model.named_modules():
        if type(mod).__name__.endswith("RotaryEmbedding"):
            fresh = type(mod)(config=model.config)
            mod.inv_freq = fresh.inv_freq
            if hasattr(mod, "original_inv_freq"):
                mod.original_inv_freq = fresh.original_inv_freq
    for name, b in model.named_buffers():
        if b.is_floating_point() and b.dtype != torch.float32 and not any(name.startswith(q + ".") for q in qmods):
            raise RuntimeError(f"buffer {name} still {b.dtype}")
    model.config.dtype = torch.float32
    return reloaded


def perplexity(model, tokens, seq_len):
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens), seq_len):
            window = tokens[start:start + seq_len]
            if len(window) < 2:
                continue
            ids = torch.tensor(window, dtype=torch.long)[None]
            logits = model(input_ids=ids).logits[0].to(torch.float64)
            logp = torch.log_softmax(logits[:-1], dim=-1)
            nll -= logp.gather(1, ids[0, 1:, None]).sum().item()
            count += len(window) - 1
    return math.exp(nll / count), nll / count, count


def compare_weights(model, src_dir, reader):
    """GPTQModel's dequantized weight per quantized module vs the fixture reader on pmq's tensors."""
    src = checkpoint_tensors(src_dir)
    by_runtime = {}
    for k in src:
        if k.endswith(".qweight"):
            by_runtime[rename_tensor(k[: -len("qweight")])[:-1]] = k[: -len(".qweight")]
    max_diff, not_equal, n, bits_seen, zero0 = 0.0, [], 0, {}, 0
    for name, m in quant_modules(model).items():
        base = by_runtime[name]
        qweight = src[base + ".qweight"].numpy().view(np.uint32)
        qzeros = src[base + ".qzeros"].numpy().view(np.uint32) if base + ".qzeros" in src else None
        scales = src[base + ".scales"].numpy()
        g_idx = src[base + ".g_idx"].numpy()
        out_f, in_f = scales.shape[1], g_idx.shape[0]
        bits = round(qweight.shape[0] * 32 / in_f)
        if bits != m.bits:
            raise RuntimeError(f"{name}: checkpoint width {bits}, GPTQModel built {m.bits}")
        if qzeros is not None:
            zero0 += int((reader.unpack_zeros_v1(qzeros, bits, out_f) == 0).sum())
        _, _, ref = reader.dequantize(qweight, qzeros, scales, g_idx, bits, out_f, in_f)  # [out, in] f32
        with torch.no_grad():
            got = m.dequantize_weight().to(torch.float32).T.contiguous().numpy()     # [out, in]
        d = float(np.abs(got - ref).max())
        max_diff = max(max_diff, d)
        if not np.array_equal(got, ref):
            not_equal.append(name)
        n += 1
        bits_seen[bits] = bits_seen.get(bits, 0) + 1
    return n, max_diff, not_equal, bits_seen, zero0


def pmq_eval(binary, model_dir, tokens_path, max_tokens, seq_len):
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        subprocess.run([binary, "eval", "--model", model_dir, "--tokens", tokens_path, "--max-tokens",
                        str(max_tokens), "--seq-len", str(seq_len), "--json", tmp.name, "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        r = json.load(open(tmp.name))
    return r["perplexity"], r["negativeLogLikelihood"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="pmq packed directory")
    ap.add_argument("--tokens", default=os.path.join(ROOT, "examples", "model", "eval.u32"))
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    ap.add_argument("--compare-weights", action="store_true")
    ap.add_argument("--raw", action="store_true", help="load the directory unchanged (no shim)")
    ap.add_argument("--work", help="directory for the shim copy (default: a temporary directory)")
    ap.add_argument("--pmq", help="pmq binary: also run `pmq eval` on the directory and compare")
    args = ap.parse_args()

    src = os.path.abspath(args.model)
    if args.raw:
        load_dir = src
    else:
        load_dir = args.work or tempfile.mkdtemp(prefix="interop-shim-")
        if os.path.exists(load_dir) and os.listdir(load_dir):
            shutil.rmtree(load_dir)
        for c in make_shim(src, load_dir):
            print(f"shim: {c}")

    from gptqmodel import BACKEND, GPTQModel

    load_dtype = torch.float16 if args.dtype == "float32" else getattr(torch, args.dtype)
    t0 = time.time()
    try:
        qm = GPTQModel.load(load_dir, backend=BACKEND.TORCH, device="cpu", dtype=load_dtype)
    except Exception as e:  # record the failure, with where it came from
        import traceback
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{fr.filename.split('site-packages/')[-1]}:{fr.lineno} ({fr.name})"
                      for fr in reversed(tb) if "gptqmodel" in fr.filename or "transformers" in fr.filename), "?")
        msg = str(e)
        print(f"LOAD FAILED: {type(e).__name__}: {msg[:600]}{' ...' if len(msg) > 600 else ''}")
        print(f"  raised at {where}")
        sys.exit(2)
    model = qm.model
    model.eval()
    qmods = quant_modules(model)
    kinds = sorted({type(m).__name__ for m in qmods.values()})
    widths = {}
    for m in qmods.values():
        widths[m.bits] = widths.get(m.bits, 0) + 1
    print(f"loaded in {time.time() - t0:.1f} s: {len(qmods)} quantized linears {kinds}, widths {dict(sorted(widths.items()))}")
    if args.dtype == "float32":
        n = to_float32(model, load_dir)
        print(f"float32: scales upcast, {n} float tensors re-read from the checkpoint")

    if args.compare_weights:
        reader = load_fixture_reader()
        n, max_diff, not_equal, bits_seen, zero0 = compare_weights(model, src, reader)
        print(f"weights: {n} modules {dict(sorted(bits_seen.items()))}, max |GPTQModel - reference| = {max_diff:.3g}, "
              f"not bit-identical: {len(not_equal)}{' ' + str(not_equal[:5]) if not_equal else ''}; "
              f"(group, column) zeros equal to 0 (v1 borrow case): {zero0}")

    tokens = np.fromfile(args.tokens, dtype="<u4")[: args.max_tokens].astype(np.int64).tolist()
    t0 = time.time()
    ppl, mean_nll, count = perplexity(model, tokens, args.seq_len)
    print(f"GPTQModel perplexity {ppl:.4f}  (mean NLL {mean_nll:.6f} over {count} predictions, "
          f"{len(tokens)} tokens, {args.dtype}, {time.time() - t0:.1f} s)")
    if args.pmq:
        p_ppl, p_nll = pmq_eval(args.pmq, src, args.tokens, args.max_tokens, args.seq_len)
        print(f"pmq       perplexity {p_ppl:.4f}  (mean NLL {p_nll:.6f});  "
              f"relative difference {abs(ppl - p_ppl) / p_ppl:.2e}")


if __name__ == "__main__":
    main()
