//! ccvm's host-side integration tests: the real `ccvm` executable in a private world with a
//! controlled `PATH` (a fake hypervisor stands in for QEMU), real plugin libraries built by
//! cargo, and the real Claude Code's `--help` (from the built image). Nothing here boots a VM:
//! those tests are the `vm` binary (`tests/vm/`).
//!
//! The plugin libraries come from `cargo build --workspace`, which the README's test command
//! runs first; a missing library fails the test with that instruction.

mod cli;
mod clipboard;
mod completions;
mod config;
mod image;
mod passthrough;
mod plan;
mod plugins;
