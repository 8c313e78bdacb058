#!/usr/bin/env bash
# The whole test suite. The integration tests load the plugin libraries (*.so) that
# `cargo build --workspace` produces and boot the static guest agent, so build both first.
# Tests that boot a VM skip with a printed reason when QEMU or the image tools are missing
# (scripts/deps.sh installs them); CCVM_REQUIRE_VM_TESTS=1 turns such a skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
scripts/build-guest.sh >/dev/null
cargo test --workspace
