#!/usr/bin/env bash
# The benchmarks: builds what they load (release ccvm, the plugin libraries, the static guest
# agent), then runs bench/sessions.rs. Writes bench/RESULTS.md; `--virt` measures the aarch64
# guest on `virt` instead (bench/RESULTS-virt.md); `--quick` is a smoke run with
# tiny sizes that writes target/bench/RESULTS-quick.md instead. Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --quiet
scripts/build-guest.sh >/dev/null
case " $* " in *" --virt "*) scripts/build-guest.sh aarch64 >/dev/null ;; esac
exec cargo bench --quiet -p ccvm --bench sessions -- "$@"
