#!/usr/bin/env python3
"""Baseline for `pmq bench gptq`: the published GPTQ (tools/fixtures/make_gptq_fixtures.py's
`gptq`, IST-DASLab's algorithm) in torch on the CPU, float32 as the original. Benchmark only:
never on pmq's run path or in CI.

Same matrices as the Swift run (preferred):

    pmq bench gptq --hidden 4096 --intermediate 14336 --dump /tmp/gptq-dump
    tools/.venv/bin/python tools/gptq_bench.py --load /tmp/gptq-dump

reads gate, down and both Hessians from DIR/gptq_bench.safetensors and the Swift seconds from
DIR/swift_timings.json, and prints torch's seconds and the ratio torch / Swift per width.
The fixture function also computes the error as trace(E H Eᵀ), which forms a rows×rows matrix;
that step is timed on its own and the time without it is printed too (IST-DASLab's `fasterquant`
computes no such error). Without --load, random matrices of the given shapes are used.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
from make_gptq_fixtures import gptq  # noqa: E402


def timed(weight, hessian, bits, groupsize=128, blocksize=128):
    """Seconds of the fixture `gptq`, error and seconds of its trace(E H Eᵀ) step."""
    start = time.perf_counter()
    codes, scales, zeros, error, g_idx = gptq(weight, hessian, bits, groupsize, blocksize)
    total = time.perf_counter() - start
    groups = g_idx.long()
    quantized = scales[:, groups] * (codes - zeros[:, groups])
    difference = weight - quantized
    start = time.perf_counter()
    torch.trace(difference @ hessian @ difference.T)
    trace_seconds = time.perf_counter() - start
    return total, error.item(), trace_seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--load", help="directory written by `pmq bench gptq --dump`")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=3584)
    parser.add_argument("--widths", default=None, help="default: the Swift run's widths, or 2,3,4")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}")
    swift = {}
    if args.load:
        from safetensors.torch import load_file
        tensors = load_file(os.path.join(args.load, "gptq_bench.safetensors"))
        gate, down = tensors["gate"].to(dtype), tensors["down"].to(dtype)
        h_in, h_down = tensors["h_in"].to(dtype), tensors["h_down"].to(dtype)
        path = os.path.join(args.load, "swift_timings.json")
        if os.path.exists(path):
            with open(path) as handle:
                swift = {int(w["bits"]): w for w in json.load(handle)["widths"]}
    else:
        torch.manual_seed(0)
        x_in = torch.rand(args.tokens, args.hidden, dtype=dtype) * 2 - 1
        x_down = torch.rand(args.tokens, args.intermediate, dtype=dtype) * 2 - 1
        h_in, h_down = x_in.T @ x_in, x_down.T @ x_down
        gate = (torch.rand(args.intermediate, args.hidden, dtype=dtype) * 2 - 1) * 0.02
        down = (torch.rand(args.hidden, args.intermediate, dtype=dtype) * 2 - 1) * 0.02
    widths = [int(w) for w in args.widths.split(",")] if args.widths else (sorted(swift) or [2, 3, 4])
    for bits in widths:
        t1, e1, trace1 = timed(gate, h_in, bits)
        t2, e2, trace2 = timed(down, h_down, bits)
        expert, without = 2 * t1 + t2, 2 * (t1 - trace1) + (t2 - trace2)
        line = (f"{bits} bits: gate/up {t1:.2f} s each, down {t2:.2f} s, expert {expert:.2f} s "
                f"(without the trace(E H Eᵀ) step {without:.2f} s; errors {e1:.4g}, {e2:.4g})")
        if bits in swift:
            s = swift[bits]
            line += (f"\n  Swift: expert {s['expert_seconds']:.2f} s (errors {s['gate_error']:.4g}, {s['down_error']:.4g}); "
                     f"torch / Swift: gate/up {t1 / s['gate_seconds']:.2f}×, down {t2 / s['down_seconds']:.2f}×, "
                     f"expert {expert / s['expert_seconds']:.2f}× ({without / s['expert_seconds']:.2f}× without the trace step)")
        print(line, flush=True)


if __name__ == "__main__":
    main()
