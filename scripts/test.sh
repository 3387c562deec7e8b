#!/usr/bin/env bash
# Set up a fresh machine and run pmq's test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Formatting is part of the tests: .swift-format (4-space indent, lines of at most 120 columns).
# `swift format -i -r Sources Tests Package.swift` fixes what this reports.
swift format lint --strict --recursive Sources Tests Package.swift
swift build --build-tests
swift test
# The short fuzz run: 2,000 seeded mutations of each of the 11 input formats through pmq's readers (22,000
# cases); any trap or hang fails the run. The long run's figures are in the README.
swift build --product pmq
.build/debug/pmq fuzz --cases 2000 --quiet
# A real single-node Slurm cluster (slurm-wlm and munge from Debian, started and stopped by the script): profile
# slices as an array job on both example models, merged, equal to one process (issue 16).
bash scripts/cluster-test.sh
