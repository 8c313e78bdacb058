#!/usr/bin/env bash
# Builds the static guest agent (it runs as PID 1 before any shared library exists) and
# prints its path.
#   scripts/build-guest.sh           for this host's architecture (glibc with crt-static needs
#                                    no extra rustup target)
#   scripts/build-guest.sh aarch64   for the aarch64 `virt` guest on an x86_64 host: needs
#                                    `rustup target add aarch64-unknown-linux-gnu` and Debian's
#                                    gcc-aarch64-linux-gnu and libc6-dev-arm64-cross
#                                    (scripts/deps.sh --aarch64 installs all three)
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-$(uname -m)}
case "$arch" in
    x86_64 | aarch64) ;;
    *) echo "build-guest: unknown architecture '$arch' (x86_64 or aarch64)" >&2; exit 2 ;;
esac
if [ "$arch" != "$(uname -m)" ]; then
    linker="${arch}-linux-gnu-gcc"
    if ! command -v "$linker" >/dev/null; then
        echo "build-guest: the cross linker $linker is missing; run scripts/deps.sh --$arch" >&2
        exit 1
    fi
    if ! rustup target list --installed 2>/dev/null | grep -qx "${arch}-unknown-linux-gnu"; then
        echo "build-guest: the Rust target ${arch}-unknown-linux-gnu is missing; run" \
            "scripts/deps.sh --$arch (or rustup target add ${arch}-unknown-linux-gnu)" >&2
        exit 1
    fi
    upper=$(echo "$arch" | tr '[:lower:]' '[:upper:]')
    export "CARGO_TARGET_${upper}_UNKNOWN_LINUX_GNU_LINKER=$linker"
fi
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --quiet -p ccvm-guest --target "${arch}-unknown-linux-gnu"
echo "target/${arch}-unknown-linux-gnu/release/ccvm-guest"
