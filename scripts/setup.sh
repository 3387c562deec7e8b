#!/usr/bin/env bash
# Installs what pmq needs to build on a fresh Debian/Ubuntu machine (Swift itself is assumed:
# Swift 6.0 or newer on PATH). Idempotent.
set -euo pipefail
packages=(coinor-libcbc-dev coinor-libclp-dev pkg-config)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}"
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (pmq needs Swift 6.0 or newer)" >&2; exit 1; }
pkg-config --exists cbc || { echo "setup: pkg-config cannot find cbc after installing ${packages[*]}" >&2; exit 1; }
