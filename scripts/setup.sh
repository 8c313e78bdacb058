#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for ccvm: installs the packages it needs, installs
# `ccvm` and its static guest agent into ~/.cargo/bin, builds the guest image (Claude Code
# from npm on a Debian root; a few minutes) and shows the plugins it found. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "setup: Rust is missing; install it with your distribution's rustup package, then rerun" >&2
    exit 1
fi
scripts/deps.sh --user
cargo install --locked --path ccvm-cli
agent=$(scripts/build-guest.sh)
install -m 0755 "$agent" "${CARGO_HOME:-$HOME/.cargo}/bin/ccvm-guest"
ccvm --ccvm-image build
ccvm --ccvm-plugins
