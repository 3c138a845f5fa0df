//! Timestamps of spans and events.
//!
//! The application thread only reads a raw counter ([`Stamp::now`]): the CPU's time-stamp
//! counter where it is invariant, through `quanta`, else the monotonic clock. On the
//! reference machine that costs about 10 ns, against 37 ns for `SystemTime::now()`, and a
//! span reads the clock twice. The worker turns stamps into wall-clock time
//! ([`Stamp::to_system`]) from pairs of (counter, `SystemTime`) readings: the latest pair,
//! renewed at most every [`REFRESH`] while rows are being built ([`tick`]), and the counter's
//! rate measured between the first pair and the latest, so a converted time stays within
//! microseconds of what `SystemTime::now()` would have read at that moment. A pair is read
//! as counter, system clock, counter, and taken again when the thread was held up in between
//! (its counter time is the midpoint). The start and end of one row are converted under one
//! lock, with the same pair ([`span_times`]), so a span never ends before it starts.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest a pair of readings is used before [`tick`] takes a new one.
const REFRESH: Duration = Duration::from_millis(100);

/// How far the measured rate may stray from the calibrated one before the system clock is
/// taken to have been stepped (set by hand, or by a large NTP correction): the measurement
/// then starts again from the current pair.
const MAX_RATE_ERROR: f64 = 1e-3;

/// A moment, as the raw counter read on the application thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// Now: one counter read, no system call.
    #[inline]
    pub(crate) fn now() -> Stamp {
        Stamp(counter().raw())
    }

    /// The raw counter value (to store a stamp, for [`Stamp::from_raw`] in the same process).
    pub(crate) fn raw(self) -> u64 {
        self.0
    }

    /// A stamp stored by [`Stamp::raw`] in this process.
    pub(crate) fn from_raw(raw: u64) -> Stamp {
        Stamp(raw)
    }

    /// The wall-clock time of this moment.
    pub(crate) fn to_system(self) -> SystemTime {
        with_timebase(|tb| tb.wall(self.0))
    }
}

/// The wall-clock times of a span's start and end, converted with the same pair of readings:
/// the end is never before the start.
pub(crate) fn span_times(start: Stamp, end: Option<Stamp>) -> (SystemTime, Option<SystemTime>) {
    with_timebase(|tb| {
        let start_time = tb.wall(start.0);
        (start_time, end.map(|e| tb.wall(e.0).max(start_time)))
    })
}

fn with_timebase<R>(f: impl FnOnce(&mut Timebase) -> R) -> R {
    match timebase().lock() {
        Ok(mut tb) => f(&mut tb),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

fn counter() -> &'static quanta::Clock {
    static COUNTER: OnceLock<quanta::Clock> = OnceLock::new();
    COUNTER.get_or_init(quanta::Clock::new)
}

fn timebase() -> &'static Mutex<Timebase> {
    static TIMEBASE: OnceLock<Mutex<Timebase>> = OnceLock::new();
    TIMEBASE.get_or_init(|| Mutex::new(Timebase::new()))
}

/// Calibrates the counter (once per process: about a millisecond on the reference machine,
/// `quanta` allows itself up to 200 ms) and takes the first pair of readings: called when a
/// layer is built, so that no span pays for it.
pub(crate) fn init() {
    let _ = timebase();
}

/// Takes a new pair of readings when the latest is older than [`REFRESH`]. The worker calls
/// it before building rows.
pub(crate) fn tick() {
    with_timebase(|tb| {
        let raw = counter().raw();
        if tb.nanos_between(tb.anchor.raw, raw) >= REFRESH.as_nanos() as f64 {
            let rate = tb.rate;
            tb.refresh(Reading::now(rate));
        }
    });
}

/// A counter value and the system clock, read one right after the other.
#[derive(Clone, Copy, Debug)]
struct Reading {
    raw: u64,
    /// Nanoseconds since the Unix epoch (negative before it).
    wall: i128,
}

/// A pair whose counter reads, before and after the system clock, are further apart than
/// this was held up in between: it is read again (at most [`READ_TRIES`] times in all, the
/// tightest kept).
const MAX_READ_GAP_NANOS: f64 = 2_000.0;

const READ_TRIES: usize = 5;

impl Reading {
    /// Counter, system clock, counter: the counter time is the midpoint of the two reads.
    /// `rate` is the counter's nanoseconds per tick, to judge the gap.
    fn now(rate: f64) -> Reading {
        let mut best: Option<(u64, Reading)> = None;
        for _ in 0..READ_TRIES {
            let before = counter().raw();
            let wall = epoch_nanos(SystemTime::now());
            let after = counter().raw().max(before);
            let gap = after - before;
            let reading = Reading {
                raw: before + gap / 2,
                wall,
            };
            if best.is_none_or(|(g, _)| gap < g) {
                best = Some((gap, reading));
            }
            if gap as f64 * rate <= MAX_READ_GAP_NANOS {
                break;
            }
        }
        best.map_or(
            Reading {
                raw: counter().raw(),
                wall: epoch_nanos(SystemTime::now()),
            },
            |(_, reading)| reading,
        )
    }
}

#[derive(Debug)]
struct Timebase {
    /// Where the rate is measured from.
    first: Reading,
    /// The pair conversions start from.
    anchor: Reading,
    /// Nanoseconds per counter tick, as calibrated by `quanta`.
    calibrated: f64,
    /// Nanoseconds per counter tick, as measured against the system clock.
    rate: f64,
}

impl Timebase {
    fn new() -> Timebase {
        let calibrated = calibrated_rate();
        let first = Reading::now(calibrated);
        Timebase {
            first,
            anchor: first,
            calibrated,
            rate: calibrated,
        }
    }

    fn nanos_between(&self, from: u64, to: u64) -> f64 {
        (i128::from(to) - i128::from(from)) as f64 * self.rate
    }

    fn refresh(&mut self, now: Reading) {
        let ticks = i128::from(now.raw) - i128::from(self.first.raw);
        let nanos = now.wall - self.first.wall;
        if ticks > 0 && nanos > 0 {
            let measured = nanos as f64 / ticks as f64;
            if ((measured - self.calibrated) / self.calibrated).abs() <= MAX_RATE_ERROR {
                self.rate = measured;
            } else {
                // The system clock jumped: measure again from here.
                self.first = now;
                self.rate = self.calibrated;
            }
        } else {
            self.first = now;
            self.rate = self.calibrated;
        }
        self.anchor = now;
    }

    fn wall(&self, raw: u64) -> SystemTime {
        let offset = self.nanos_between(self.anchor.raw, raw).round() as i128;
        from_epoch_nanos(self.anchor.wall + offset)
    }
}

/// `quanta`'s calibrated nanoseconds per tick (1 when the counter is the monotonic clock).
fn calibrated_rate() -> f64 {
    const TICKS: u64 = 1 << 40;
    let nanos = counter().delta_as_nanos(0, TICKS);
    if nanos == 0 {
        1.0
    } else {
        nanos as f64 / TICKS as f64
    }
}

fn epoch_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn from_epoch_nanos(nanos: i128) -> SystemTime {
    let magnitude = Duration::from_nanos(u64::try_from(nanos.unsigned_abs()).unwrap_or(u64::MAX));
    let t = if nanos >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    t.unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(a: SystemTime, b: SystemTime) -> Duration {
        match a.duration_since(b) {
            Ok(d) => d,
            Err(e) => e.duration(),
        }
    }

    #[test]
    fn a_stamp_converts_to_about_the_system_time_it_was_taken_at() {
        init();
        for _ in 0..5 {
            let before = SystemTime::now();
            let stamp = Stamp::now();
            let after = SystemTime::now();
            std::thread::sleep(Duration::from_millis(30));
            tick();
            let t = stamp.to_system();
            let mid = before + gap(after, before) / 2;
            // Within a millisecond of the system clock (in practice a few microseconds).
            assert!(gap(t, mid) < Duration::from_millis(1), "{t:?} vs {mid:?}");
        }
    }

    #[test]
    fn conversion_keeps_order_and_durations() {
        init();
        // Converted under one lock: other tests of this binary may take new pairs meanwhile.
        let stamps: Vec<Stamp> = (0..1000).map(|_| Stamp::now()).collect();
        let times: Vec<SystemTime> =
            with_timebase(|tb| stamps.iter().map(|s| tb.wall(s.0)).collect());
        for pair in times.windows(2) {
            assert!(pair[0] <= pair[1], "{pair:?}");
        }
        let start = Stamp::now();
        std::thread::sleep(Duration::from_millis(50));
        let end = Stamp::now();
        let (start, end) = span_times(start, Some(end));
        let took = gap(end.expect("an end"), start);
        assert!(
            took >= Duration::from_millis(49) && took < Duration::from_millis(500),
            "{took:?}"
        );
    }

    #[test]
    fn the_rate_is_measured_and_a_stepped_clock_starts_over() {
        let mut tb = Timebase {
            first: Reading {
                raw: 1_000,
                wall: 0,
            },
            anchor: Reading {
                raw: 1_000,
                wall: 0,
            },
            calibrated: 0.5,
            rate: 0.5,
        };
        // The counter ran 2 000 000 ticks while the clock moved 1 000 100 ns: 100 ppm fast.
        tb.refresh(Reading {
            raw: 2_001_000,
            wall: 1_000_100,
        });
        assert!((tb.rate - 0.500_05).abs() < 1e-9, "{}", tb.rate);
        assert_eq!(tb.wall(2_001_000), from_epoch_nanos(1_000_100));
        assert_eq!(tb.wall(2_001_010), from_epoch_nanos(1_000_105));
        // Stamps taken before the latest pair convert backwards from it.
        assert_eq!(tb.wall(2_000_990), from_epoch_nanos(1_000_095));
        // The clock was set back an hour: the rate starts over from the calibrated one.
        tb.refresh(Reading {
            raw: 4_001_000,
            wall: 2_000_200 - 3_600_000_000_000,
        });
        assert_eq!(tb.rate, 0.5);
        assert_eq!(tb.first.raw, 4_001_000);
        assert_eq!(
            tb.wall(4_001_002),
            from_epoch_nanos(2_000_201 - 3_600_000_000_000)
        );
    }

    #[test]
    fn an_end_never_precedes_its_start() {
        init();
        let later = Stamp::now();
        std::thread::sleep(Duration::from_millis(2));
        let earlier_end = Stamp(later.0.saturating_sub(1_000_000));
        let (start, end) = span_times(later, Some(earlier_end));
        assert_eq!(end, Some(start));
        assert_eq!(span_times(later, None).1, None);
    }

    #[test]
    fn times_before_the_epoch_and_far_ahead_do_not_panic() {
        assert_eq!(from_epoch_nanos(0), UNIX_EPOCH);
        assert_eq!(
            from_epoch_nanos(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        let _ = from_epoch_nanos(i128::MAX);
        let _ = from_epoch_nanos(i128::MIN);
        assert_eq!(
            epoch_nanos(UNIX_EPOCH - Duration::from_secs(2)),
            -2_000_000_000
        );
    }
}
