//! `CCVM_TIMINGS`: when each phase of a session was reached, for the benchmarks.

use std::path::PathBuf;

/// `CCVM_TIMINGS=FILE`: when each phase of a session was reached, written to FILE as one JSON
/// object of seconds since the Unix epoch once the session ends. For benchmarks, which compare
/// these with their own clock; nothing is written when the variable is unset.
pub struct Timings {
    file: Option<PathBuf>,
    marks: Vec<(&'static str, f64)>,
}

impl Timings {
    pub fn new(file: Option<PathBuf>) -> Self {
        Timings {
            file,
            marks: Vec::new(),
        }
    }

    pub fn mark(&mut self, phase: &'static str) {
        if self.file.is_some() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.marks.push((phase, now));
        }
    }

    pub fn write(&self) {
        let Some(file) = &self.file else { return };
        let object: serde_json::Map<String, serde_json::Value> = self
            .marks
            .iter()
            .map(|(phase, at)| ((*phase).to_owned(), (*at).into()))
            .collect();
        if let Err(e) = std::fs::write(file, serde_json::Value::Object(object).to_string()) {
            eprintln!(
                "ccvm: warning: cannot write CCVM_TIMINGS={}: {e}",
                file.display()
            );
        }
    }
}
