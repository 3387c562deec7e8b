#!/usr/bin/env bash
# Set up a fresh machine and run pmq's test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests
swift test
