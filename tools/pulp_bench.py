#!/usr/bin/env python3
"""Baseline for `pmq bench solver`: the same PMQ integer programs through PuLP's CBC.

Reads pmq-profile JSON files (as written by `pmq bench solver --write-profiles DIR`), builds the
program of docs/SOLVER.md exactly as pmq does (significance s = freq^a * mass^b normalised per layer,
cost s * err^a, nominal-bits budget sum(params*w) <= B * sum(params), one width per expert), and
solves it with PuLP's bundled CBC (a subprocess that reads an LP/MPS file), timing model build +
solve. Prints medians as JSON lines. Benchmark only: never part of pmq's run path or CI.

    tools/.venv/bin/pip install pulp
    tools/.venv/bin/python tools/pulp_bench.py PROFILE.json [--repeats 3] [--sweep-points 31]
"""
import argparse
import json
import statistics
import sys
import time

import pulp


def load(path, alpha, beta):
    with open(path) as handle:
        profile = json.load(handle)
    widths = profile["widths"]
    experts = []  # (params, {w: cost})
    for layer in profile["layers"]:
        freq_total = sum(e["freq"] for e in layer["experts"]) or 1.0
        mass_total = sum(e["mass"] for e in layer["experts"]) or 1.0
        for e in layer["experts"]:
            s = (e["freq"] / freq_total) ** alpha * (e["mass"] / mass_total) ** beta
            experts.append((e["params"], {w: s * e["error"][str(w)] ** alpha for w in widths}))
    return widths, experts


def solve(widths, experts, bits, gap):
    total = sum(p for p, _ in experts)
    problem = pulp.LpProblem("pmq", pulp.LpMinimize)
    x = [{w: pulp.LpVariable(f"x_{i}_{w}", cat="Binary") for w in widths} for i in range(len(experts))]
    problem += pulp.lpSum(cost[w] * x[i][w] for i, (_, cost) in enumerate(experts) for w in widths)
    for i in range(len(experts)):
        problem += pulp.lpSum(x[i].values()) == 1
    # Scaled as pmq scales it (fractions of the model), since raw counts make CBC misjudge feasibility.
    problem += pulp.lpSum(p / total * w * x[i][w] for i, (p, _) in enumerate(experts) for w in widths) <= bits
    status = problem.solve(pulp.PULP_CBC_CMD(msg=0, gapRel=gap))
    return pulp.LpStatus[status], pulp.value(problem.objective)


def timed(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--bits", type=float, default=2.5)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=1.5)
    parser.add_argument("--gap", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep-points", type=int, default=0, help="also time a sweep 1.5 -> min(top width, 3.5) bits")
    args = parser.parse_args()
    for path in args.profiles:
        widths, experts = load(path, args.alpha, args.beta)
        median, runs, (status, objective) = timed(lambda: solve(widths, experts, args.bits, args.gap), args.repeats)
        print(json.dumps({"profile": path, "experts": len(experts), "task": f"solve global {args.bits:g} bits",
                          "medianSeconds": median, "runs": runs, "status": status, "objective": objective}))
        sys.stdout.flush()
        if args.sweep_points > 1:
            top = min(max(widths), 3.5)
            budgets = [1.5 + (top - 1.5) * i / (args.sweep_points - 1) for i in range(args.sweep_points)]
            start = time.perf_counter()
            for budget in budgets:
                solve(widths, experts, budget, args.gap)
            print(json.dumps({"profile": path, "experts": len(experts),
                              "task": f"sweep global 1.5->{top:g} bits, {args.sweep_points} points",
                              "medianSeconds": time.perf_counter() - start, "runs": 1}))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
