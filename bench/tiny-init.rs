//! The benchmark's floor for a boot: a static `/init` that only says it runs. Booting the
//! guest kernel with nothing but this in its initramfs measures the hypervisor, firmware and
//! kernel alone (bench/sessions.rs compiles it with `rustc`, statically linked).

use std::io::Write;

fn main() {
    if let Ok(mut console) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(console, "tiny-init: running");
    }
    // PID 1 returning panics the kernel: with `panic=-1` and `-no-reboot` the hypervisor exits.
}
