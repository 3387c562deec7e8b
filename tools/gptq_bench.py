#!/usr/bin/env python3
"""Baseline for `pmq bench gptq`: the published GPTQ (tools/fixtures/make_gptq_fixtures.py's
`gptq`, IST-DASLab's algorithm) in torch on the CPU, float32 as the original, on random weights
and Hessians of the same shapes. Benchmark only: never on pmq's run path or in CI.

    tools/.venv/bin/python tools/gptq_bench.py --hidden 1024 --intermediate 3584 --widths 2,3,4
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
from make_gptq_fixtures import gptq  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=3584)
    parser.add_argument("--widths", default="2,3,4")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}")
    x_in = torch.rand(args.tokens, args.hidden, dtype=dtype) * 2 - 1
    x_down = torch.rand(args.tokens, args.intermediate, dtype=dtype) * 2 - 1
    h_in, h_down = x_in.T @ x_in, x_down.T @ x_down
    gate = (torch.rand(args.intermediate, args.hidden, dtype=dtype) * 2 - 1) * 0.02
    down = (torch.rand(args.hidden, args.intermediate, dtype=dtype) * 2 - 1) * 0.02
    for bits in [int(w) for w in args.widths.split(",")]:
        start = time.perf_counter()
        gptq(gate, h_in, bits, 128, 128)
        t1 = time.perf_counter() - start
        start = time.perf_counter()
        gptq(down, h_down, bits, 128, 128)
        t2 = time.perf_counter() - start
        print(f"{bits} bits: gate/up {t1:.2f} s each, down {t2:.2f} s, expert {2 * t1 + t2:.2f} s")


if __name__ == "__main__":
    main()
