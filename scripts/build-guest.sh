#!/usr/bin/env bash
# Builds the static guest agent (it runs as PID 1 before any shared library exists) and
# prints its path. glibc with crt-static needs no extra rustup target.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=$(uname -m)
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --quiet -p ccvm-guest --target "${arch}-unknown-linux-gnu"
echo "target/${arch}-unknown-linux-gnu/release/ccvm-guest"
