//! A one-line progress bar on stderr (cases done, errors, elapsed), redrawn at most ten
//! times a second, and only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Whether stderr is a terminal (the default for showing progress).
pub(crate) fn is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Shared by the running cases; cheap to clone. Does nothing when off.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    total: Option<u64>,
    done: AtomicU64,
    errors: AtomicU64,
    started: Instant,
    last_draw: Mutex<Option<Instant>>,
}

const WIDTH: u64 = 30;
const REDRAW: Duration = Duration::from_millis(100);

impl Progress {
    pub(crate) fn new(name: &str, total: Option<u64>, on: bool) -> Self {
        Progress {
            inner: on.then(|| {
                Arc::new(Inner {
                    name: name.to_owned(),
                    total,
                    done: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    started: Instant::now(),
                    last_draw: Mutex::new(None),
                })
            }),
        }
    }

    /// One case (and trial) finished.
    pub(crate) fn case_done(&self, failed: bool) {
        let Some(inner) = &self.inner else { return };
        inner.done.fetch_add(1, Ordering::Relaxed);
        if failed {
            inner.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut last = inner
            .last_draw
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < REDRAW) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        inner.draw(false);
    }

    /// The final line, then a new line.
    pub(crate) fn finish(&self) {
        if let Some(inner) = &self.inner {
            inner.draw(true);
        }
    }
}

impl Inner {
    fn draw(&self, last: bool) {
        let line = line(
            &self.name,
            self.done.load(Ordering::Relaxed),
            self.total,
            self.errors.load(Ordering::Relaxed),
            self.started.elapsed(),
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        if last {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

/// `name [#####-----] 5/10 cases, 1 error, 3.2s`.
fn line(name: &str, done: u64, total: Option<u64>, errors: u64, elapsed: Duration) -> String {
    let bar = match total {
        Some(total) if total > 0 => {
            let filled = (done.min(total) * WIDTH / total) as usize;
            format!(
                " [{}{}] {done}/{total}",
                "#".repeat(filled),
                "-".repeat(WIDTH as usize - filled)
            )
        }
        _ => format!(" {done}"),
    };
    format!(
        "{name}{bar} cases, {}, {:.1}s",
        crate::diag::count(errors, "error", "errors"),
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_cases_errors_and_time() {
        assert_eq!(
            line("qa", 5, Some(10), 1, Duration::from_millis(3200)),
            format!(
                "qa [{}{}] 5/10 cases, 1 error, 3.2s",
                "#".repeat(15),
                "-".repeat(15)
            )
        );
        assert_eq!(
            line("qa", 7, None, 0, Duration::ZERO),
            "qa 7 cases, 0 errors, 0.0s"
        );
    }

    #[test]
    fn off_does_nothing() {
        let p = Progress::new("x", Some(1), false);
        p.case_done(true);
        p.finish();
        assert!(p.inner.is_none());
    }
}
