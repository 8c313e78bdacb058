#!/usr/bin/env bash
# The whole test suite. The integration tests load the plugin libraries (*.so) that
# `cargo build --workspace` produces, so build first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
cargo test --workspace
