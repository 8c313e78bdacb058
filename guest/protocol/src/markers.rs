//! Console markers: lines the guest agent prints and the host waits for or times phases by.

/// Printed once sshd listens: the host may connect.
pub const READY: &str = "ccvm-guest: ready";
/// Printed as soon as the guest agent runs as init (then the kernel's uptime).
pub const INIT: &str = "ccvm-guest: init started";
/// Printed when the guest is set up and sshd is being started.
pub const SSHD: &str = "ccvm-guest: starting sshd";
/// The prefix of a setup failure the guest cannot recover from; it powers off after it.
pub const FATAL: &str = "ccvm-guest: fatal:";
/// The egress filter could not be installed (the guest closed egress instead, S7.2).
pub const EGRESS_FILTER_FAILED: &str = "EGRESS FILTER FAILED";
