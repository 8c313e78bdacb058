//! ccvm's integration tests: one binary that runs the real `ccvm` executable in a private
//! home with a controlled `PATH` (a fake hypervisor stands in for QEMU), and loads real
//! plugin libraries built by cargo from private directories.
//!
//! The plugin libraries come from `cargo build --workspace`, which the README's test command
//! runs first; a missing library fails the test with that instruction.

mod egress;
mod hardening;
mod harness;
mod vm;

mod boot;
mod cli;
mod config;
mod image;
mod passthrough;
mod plan;
mod plugins;
mod session;
mod terminal;
