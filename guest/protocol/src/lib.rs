//! The host↔guest contract of ccvm, defined once.
//!
//! The host (`ccvm`, its policies and backends) writes what the guest agent (`ccvm-guest`)
//! reads: the seed manifest and its version, the setup steps (with the egress filter as data
//! and its [`FirewallRules::verdict`]), the kernel command-line keys a backend sets, the
//! console markers the host waits for, the guest paths both sides name, and the kernel
//! modules the initramfs must carry. The plugin API (`ccvm-plugin-api`) re-exports the parts
//! plugins produce; the guest agent depends on this crate alone.
//!
//! Plain data and pure functions: no I/O, nothing that could not run in a static PID 1.
#![forbid(unsafe_code)]

pub mod clipboard;
pub mod cmdline;
pub mod firewall;
pub mod machine;
pub mod markers;
pub mod modules;
pub mod paths;
pub mod seed;
pub mod setup;

pub use firewall::{AllowRule, FirewallRules, Verdict};
pub use machine::{NetworkAttachment, PlannedShare, ShareTransport};
pub use seed::{GuestUser, SeedError, SeedManifest, SessionMode};
pub use setup::{GuestOwner, SetupStep};
