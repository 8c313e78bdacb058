//! ccvm's VM tests: real guests under QEMU (TCG here), the real guest agent and OpenSSH, the
//! stub image and, where a test says so, the real image with the real Claude Code driven in
//! tmux. Every test that cannot run here prints `skipped: <reason>` and passes, unless
//! `CCVM_REQUIRE_VM_TESTS=1` (and `CCVM_REQUIRE_REAL_IMAGE=1` for the real image) turns the
//! skip into a failure, as `.ci/run` does.

mod aarch64;
mod boot;
mod clipboard;
mod egress;
mod hardening;
mod images;
mod scratch;
mod session;
mod terminal;
