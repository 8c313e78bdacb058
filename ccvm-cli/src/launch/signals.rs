//! What the user sees and sends while a session boots: the stop signals (S1.4, S11.1) and
//! the progress line (S11.5).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::error::Error;

/// The signal that asked ccvm to stop, if any (SIGINT, SIGTERM, SIGHUP).
#[derive(Clone)]
pub struct Stop(Arc<AtomicUsize>);

impl Stop {
    pub fn install() -> Result<Stop, Error> {
        let flag = Arc::new(AtomicUsize::new(0));
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register_usize(signal, Arc::clone(&flag), signal as usize).map_err(
                |source| Error::Spawn {
                    action: "install the handler for",
                    program: format!("signal {signal}"),
                    source,
                },
            )?;
        }
        Ok(Stop(flag))
    }

    pub fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal as i32),
        }
    }
}

/// Boot progress on a terminal; nothing when stderr is piped (S11.5).
pub struct Progress {
    on: bool,
    started: Instant,
    last: Option<u64>,
}

impl Progress {
    pub fn tick(&mut self) {
        let seconds = self.started.elapsed().as_secs();
        if self.on && self.last != Some(seconds) {
            self.last = Some(seconds);
            eprint!("\r\x1b[2Kccvm: booting the VM… {seconds} s");
            let _ = std::io::stderr().flush();
        }
    }

    pub fn clear(&mut self) {
        if self.on && self.last.is_some() {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.last = None;
        }
    }
}

impl Progress {
    /// A progress line on stderr only when it is a terminal and the console is not streamed.
    pub fn new(on: bool) -> Progress {
        Progress {
            on,
            started: Instant::now(),
            last: None,
        }
    }
}

/// The exit status for a stop by `signal` (130 for Ctrl-C, as a shell reports it).
pub fn signal_status(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}
