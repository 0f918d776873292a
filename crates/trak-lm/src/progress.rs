//! Progress of long steps on stderr, with an estimate of the time left.

use std::time::Instant;

/// Reports `done / total` of a step, at most twice a second, with the time left at the rate
/// so far.
pub struct Eta {
    what: String,
    start: Instant,
    last: Option<Instant>,
    quiet: bool,
}

impl Eta {
    /// A step called `what`; `quiet` silences it.
    pub fn new(what: impl Into<String>, quiet: bool) -> Self {
        Self {
            what: what.into(),
            start: Instant::now(),
            last: None,
            quiet,
        }
    }

    /// Reports progress (always when `done == total`).
    pub fn report(&mut self, done: usize, total: usize, unit: &str) {
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t).as_secs_f64() >= 0.5);
        if self.quiet || !(due || done == total) {
            return;
        }
        self.last = Some(now);
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let left = match done {
            0 => "?".to_string(),
            _ => clock(elapsed * (total - done.min(total)) as f64 / done as f64),
        };
        eprintln!(
            "[trak-lm] {}: {done}/{total} {unit}, {} elapsed, {left} left",
            self.what,
            clock(elapsed)
        );
    }

    /// A message under this step's name.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("[trak-lm] {}: {}", self.what, msg.as_ref());
        }
    }
}

/// `1h02m`, `3m05s` or `12s`.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}
