//! `ccvm-guest`: the one binary ccvm puts in the VM. By how it is invoked it is:
//! - **PID 1** (`/init` in the initramfs): mounts the root image under a RAM overlay, applies
//!   the seed, starts sshd, prints the ready marker, reaps orphans, powers off at the end;
//! - **the ssh forced command** (`ccvm-guest session`): runs claude (or the shell) with the
//!   seed's argv in the project directory and supervises it;
//! - **the clipboard stand-ins** (`xclip`, `wl-paste`).
//!
//! It must never take a command from the ssh client: the seed is the only source of argv.

mod clipboard;
mod disks;
mod firewall;
mod init;
mod modules;
mod scratch;
mod session;
mod setup;

use std::path::Path;

fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = match name.as_str() {
        "xclip" | "wl-paste" => clipboard::run(&name, &args.collect::<Vec<_>>()),
        _ if std::process::id() == 1 => init::run(),
        _ => match args.next().and_then(|a| a.into_string().ok()).as_deref() {
            Some("session") => session::run(),
            Some("init") => init::run(),
            _ => {
                eprintln!("usage: ccvm-guest session   (the ssh forced command)");
                eprintln!("       run as /init (PID 1) inside a ccvm VM");
                2
            }
        },
    };
    std::process::exit(code);
}
