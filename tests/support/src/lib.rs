//! What ccvm's test binaries (`tests/integration`, `tests/vm`) and benchmarks (`bench/`)
//! share: a private [`world::World`] to run the real `ccvm` executable in (home, XDG
//! directories, project, a controlled `PATH`), the [`world::Ccvm`] invocation builder, and for
//! VM tests ([`vm`]) skipping with a printed reason, the stub and real images, and running a
//! process with a hard deadline; a private tmux terminal ([`tmux`]).
//!
//! Test code only: it may panic, and never touches anything outside the worlds it creates and
//! the image cache it is pointed at.

pub mod registry;
pub mod tmux;
pub mod vm;
pub mod world;

use std::path::{Path, PathBuf};

/// The `ccvm` executable of this build, found beside the test or bench executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/ccvm`), which cargo builds first.
pub fn ccvm_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let binary = profile.join("ccvm");
    assert!(
        binary.is_file(),
        "{} is missing: build it first (`cargo build --workspace --all-targets`)",
        binary.display()
    );
    binary
}

/// A scratch directory inside `target/` for files tests derive once per build (the real
/// Claude Code binary extracted from the image).
pub fn target_tmp() -> PathBuf {
    ccvm_binary()
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("tmp")
}
