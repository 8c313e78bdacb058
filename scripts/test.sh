#!/usr/bin/env bash
# The whole test suite. The integration tests load the plugin libraries (*.so) that
# `cargo build --workspace` produces and boot the static guest agent, so build both first.
# Tests that boot a VM skip with a printed reason when QEMU or the image tools are missing
# (scripts/deps.sh installs them); CCVM_REQUIRE_VM_TESTS=1 turns such a skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
scripts/build-guest.sh >/dev/null
# The aarch64 agent for the `virt` tests, where the cross tools are installed
# (scripts/deps.sh --aarch64); without it those tests skip and say why.
if [ "$(uname -m)" = x86_64 ] && command -v aarch64-linux-gnu-gcc >/dev/null \
    && rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    scripts/build-guest.sh aarch64 >/dev/null
fi
cargo test --workspace
