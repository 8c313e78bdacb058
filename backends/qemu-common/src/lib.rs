//! What ccvm's QEMU backends share: a typed argument builder (the one place where `,` in a
//! value becomes `,,`) and one planner parameterised by a [`Flavor`] (machine type, virtio
//! transport, console tty, kernel command line additions).
//!
//! Pure: builds argument vectors, never runs QEMU.
#![forbid(unsafe_code)]

mod argv;
mod plan;

pub use argv::{Argv, Opts};
pub use plan::{Flavor, Transport, capabilities, plan, requirements, virtiofsd_candidates};
