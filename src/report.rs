//! [`FlushReport`] as one readable line, for programs that print it at exit.

use std::fmt;

use crate::diag::count;
use crate::guard::FlushReport;

/// One line whose parts add up to the total: `enqueued` rows, split into sent, spooled,
/// dropped, failed and still in flight (only the parts that are not zero), then the counts
/// that are not part of that total, and a note when the flush or shutdown ran out of time.
///
/// # Examples
///
/// ```
/// use tracing_braintrust::{BraintrustLayer, MemorySink};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let (layer, guard) = BraintrustLayer::builder()
///     .with_memory_sink(MemorySink::new())
///     .build()?;
/// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
///     tracing::info_span!("work").in_scope(|| tracing::info!("done"));
/// });
/// assert_eq!(guard.shutdown().to_string(), "2 rows: 2 sent");
/// # Ok::<(), tracing_braintrust::Error>(())
/// ```
impl fmt::Display for FlushReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.enqueued == 0 {
            f.write_str("no rows")?;
        } else {
            write!(f, "{}: ", count(self.enqueued, "row", "rows"))?;
            let parts = [
                (self.sent, "sent"),
                (self.spooled, "spooled for the next run"),
                (self.dropped, "dropped"),
                (self.failed, "failed"),
                (self.in_flight(), "still in flight"),
            ];
            let mut first = true;
            for (n, what) in parts.iter().filter(|(n, _)| *n > 0) {
                if !first {
                    f.write_str(", ")?;
                }
                write!(f, "{n} {what}")?;
                first = false;
            }
            if first {
                // Counts read while the worker moves rows along can briefly overlap.
                f.write_str("0 sent")?;
            }
        }
        let extras = [
            (
                self.unfinished,
                count(self.unfinished, "span was", "spans were"),
                " still open (written unfinished)",
            ),
            (
                self.sampled_out,
                count(self.sampled_out, "span", "spans"),
                " sampled out",
            ),
            (
                self.replayed,
                count(self.replayed, "spooled row", "spooled rows"),
                " replayed",
            ),
            (
                self.spool_lines_skipped,
                count(
                    self.spool_lines_skipped,
                    "torn spool line",
                    "torn spool lines",
                ),
                " skipped",
            ),
            (
                self.replay_failed,
                count(self.replay_failed, "spooled row was", "spooled rows were"),
                " refused for good (set aside under refused/)",
            ),
            (
                self.spool_files_unreadable,
                count(self.spool_files_unreadable, "spool file", "spool files"),
                " could not be opened",
            ),
        ];
        for (n, counted, what) in extras {
            if n > 0 {
                write!(f, "; {counted}{what}")?;
            }
        }
        if !self.complete {
            f.write_str(" (timed out before the worker confirmed: counts may still change)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(f: impl FnOnce(&mut FlushReport)) -> String {
        let mut r = FlushReport {
            complete: true,
            ..FlushReport::default()
        };
        f(&mut r);
        r.to_string()
    }

    #[test]
    fn the_line_names_only_what_happened_and_its_parts_add_up() {
        assert_eq!(report(|_| {}), "no rows");
        assert_eq!(report(|r| (r.enqueued, r.sent) = (1, 1)), "1 row: 1 sent");
        assert_eq!(
            report(|r| {
                (r.enqueued, r.sent, r.spooled, r.dropped, r.failed) = (11, 5, 3, 1, 2);
            }),
            "11 rows: 5 sent, 3 spooled for the next run, 1 dropped, 2 failed"
        );
        assert_eq!(
            report(|r| {
                (r.enqueued, r.sent, r.unfinished, r.sampled_out) = (4, 4, 1, 2);
                (r.replayed, r.spool_lines_skipped) = (7, 1);
            }),
            "4 rows: 4 sent; 1 span was still open (written unfinished); 2 spans sampled out; \
             7 spooled rows replayed; 1 torn spool line skipped"
        );
    }

    #[test]
    fn a_timed_out_report_says_so_and_shows_what_is_in_flight() {
        assert_eq!(
            report(|r| {
                (r.enqueued, r.sent, r.complete) = (10, 4, false);
            }),
            "10 rows: 4 sent, 6 still in flight (timed out before the worker confirmed: \
             counts may still change)"
        );
        assert_eq!(
            report(|r| (r.enqueued, r.complete) = (2, false)),
            "2 rows: 2 still in flight (timed out before the worker confirmed: counts may \
             still change)"
        );
    }
}
