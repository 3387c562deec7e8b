#!/usr/bin/env bash
# Checks examples/cluster/kubernetes/*.yaml against the Kubernetes API schemas (kubernetes-validate, strict: unknown
# fields are errors) for the oldest and newest Kubernetes versions it knows that the manifests target. Python, so
# it runs here and not in CI's tests; README "Profiling on a cluster" says what it reported.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x tools/.venv/bin/python ] || python3 -m venv tools/.venv
tools/.venv/bin/pip install -q kubernetes-validate
for version in 1.29.0 1.37.0; do
    tools/.venv/bin/kubernetes-validate --strict -k "$version" examples/cluster/kubernetes/*.yaml
done
