//! The channel between the layer and its worker: `flume::bounded` (what the crate uses)
//! against `crossbeam_channel::bounded` and `std::sync::mpsc::sync_channel`.
//!
//! Producers `try_send` a 200-byte message in a loop while one consumer thread drains the
//! channel with a blocking `recv` (`flume_async`: flume drained with `recv_async` on a
//! current-thread tokio runtime, as the worker does).
//!
//! Groups:
//! - `channel_1p`: one producer; wall time per `try_send`.
//! - `channel_4p_cpu`: four producers at once; CPU time of each producer per `try_send`.
//! - `channel_4p_wall`: four producers; wall time over all sends (amortized throughput).
//! - `channel_paced{2,20}us_{1,4}p`: 2 µs or 20 µs of busy work before each send, each send
//!   timed alone: the consumer has drained everything and is spinning (2 µs) or parked
//!   (20 µs), so this includes waking it, as for a layer emitting spans at a moderate rate.
//!
//! - `channel_parked500us_{1,4}p` (printed at the end, outside criterion): a 500 µs sleep
//!   before each send, so the consumer is parked; median and p90 of single sends.
//!
//! In the first three groups each sample gets a channel with room for all its messages (up
//! to 2^21), so sends succeed; the paced groups use a capacity of 2^16.
//!
//! A line on stderr after each benchmark gives the sends that found the channel full.
//!
//! `cargo bench --bench channels -- --measurement-time 2`

mod common;

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};

/// Largest capacity of a channel: in the burst groups each sample gets a channel with room
/// for all its messages (up to this), so `try_send` is measured on the path where it
/// succeeds, not on the cheap path of a full channel.
const MAX_CAPACITY: usize = 1 << 21;

/// A message of about the size of the layer's messages.
#[derive(Clone, Copy)]
struct Msg([u64; 25]);

const _: () = assert!(std::mem::size_of::<Msg>() == 200);

#[derive(Clone, Copy, Debug)]
enum Chan {
    Flume,
    FlumeAsync,
    Crossbeam,
    StdSync,
}

impl Chan {
    const ALL: [Chan; 4] = [
        Chan::Flume,
        Chan::FlumeAsync,
        Chan::Crossbeam,
        Chan::StdSync,
    ];

    fn name(self) -> &'static str {
        match self {
            Chan::Flume => "flume",
            Chan::FlumeAsync => "flume_async",
            Chan::Crossbeam => "crossbeam",
            Chan::StdSync => "std_sync_channel",
        }
    }
}

/// A sending half of any of the channels.
enum Tx {
    Flume(flume::Sender<Msg>),
    Crossbeam(crossbeam_channel::Sender<Msg>),
    Std(std::sync::mpsc::SyncSender<Msg>),
}

impl Tx {
    #[inline]
    fn try_send(&self, m: Msg) -> bool {
        match self {
            Tx::Flume(tx) => tx.try_send(m).is_ok(),
            Tx::Crossbeam(tx) => tx.try_send(m).is_ok(),
            Tx::Std(tx) => tx.try_send(m).is_ok(),
        }
    }
}

/// One sample: a fresh channel and consumer, `producers` threads sending `iters` messages
/// each. Returns (wall time from the start barrier to the last producer's end, the sum of
/// the producers' CPU times, sends that failed).
fn run(
    chan: Chan,
    producers: usize,
    iters: u64,
    pace: Option<Duration>,
) -> (Duration, Duration, u64) {
    let capacity = if pace.is_some() {
        1 << 16
    } else {
        usize::try_from(iters.saturating_mul(producers as u64))
            .unwrap_or(MAX_CAPACITY)
            .clamp(1024, MAX_CAPACITY)
    };
    let (tx, consumer): (Tx, Box<dyn FnOnce() + Send>) = match chan {
        Chan::Flume => {
            let (tx, rx) = flume::bounded::<Msg>(capacity);
            (
                Tx::Flume(tx),
                Box::new(move || {
                    while let Ok(m) = rx.recv() {
                        black_box(m.0[0]);
                    }
                }),
            )
        }
        Chan::FlumeAsync => {
            let (tx, rx) = flume::bounded::<Msg>(capacity);
            let drain = move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    while let Ok(m) = rx.recv_async().await {
                        black_box(m.0[0]);
                        while let Ok(m) = rx.try_recv() {
                            black_box(m.0[0]);
                        }
                    }
                });
            };
            (Tx::Flume(tx), Box::new(drain))
        }
        Chan::Crossbeam => {
            let (tx, rx) = crossbeam_channel::bounded::<Msg>(capacity);
            (
                Tx::Crossbeam(tx),
                Box::new(move || {
                    while let Ok(m) = rx.recv() {
                        black_box(m.0[0]);
                    }
                }),
            )
        }
        Chan::StdSync => {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(capacity);
            (
                Tx::Std(tx),
                Box::new(move || {
                    while let Ok(m) = rx.recv() {
                        black_box(m.0[0]);
                    }
                }),
            )
        }
    };
    let consumer = std::thread::spawn(consumer);
    let barrier = Barrier::new(producers + 1);
    let failed = AtomicU64::new(0);
    let result = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..producers)
            .map(|_| {
                let (tx, barrier, failed) = (&tx, &barrier, &failed);
                scope.spawn(move || {
                    barrier.wait();
                    let mut lost = 0;
                    let cpu = if let Some(pace) = pace {
                        // Each send timed alone, after `pace` of busy work.
                        let mut timed = Duration::ZERO;
                        for i in 0..iters {
                            let until = Instant::now() + pace;
                            while Instant::now() < until {
                                std::hint::spin_loop();
                            }
                            let start = Instant::now();
                            if !tx.try_send(Msg([i; 25])) {
                                lost += 1;
                            }
                            timed += start.elapsed();
                        }
                        timed
                    } else {
                        let cpu0 = common::thread_cpu_time();
                        for i in 0..iters {
                            if !tx.try_send(Msg([i; 25])) {
                                lost += 1;
                            }
                        }
                        common::thread_cpu_time().saturating_sub(cpu0)
                    };
                    failed.fetch_add(lost, Ordering::Relaxed);
                    cpu
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let cpu: Duration = handles
            .into_iter()
            .map(|h| h.join().expect("producer"))
            .sum();
        (start.elapsed(), cpu)
    });
    drop(tx);
    consumer.join().expect("consumer");
    (result.0, result.1, failed.load(Ordering::Relaxed))
}

/// Which time a group reports.
#[derive(Clone, Copy)]
enum Measure {
    /// Wall time per send of one producer.
    Wall1,
    /// CPU time per send, averaged over the producers.
    CpuPerProducer,
    /// Wall time over all sends of all producers.
    WallAll,
    /// Each send timed alone after this much busy work, averaged over the producers.
    Paced(Duration),
}

fn group(c: &mut Criterion, name: &str, producers: usize, measure: Measure) {
    let mut g: BenchmarkGroup<'_, WallTime> = c.benchmark_group(name);
    for chan in Chan::ALL {
        let (sent, lost) = (AtomicU64::new(0), AtomicU64::new(0));
        g.bench_function(chan.name(), |b| {
            b.iter_custom(|iters| {
                let pace = match measure {
                    Measure::Paced(pace) => Some(pace),
                    _ => None,
                };
                let (wall, cpu, failed) = run(chan, producers, iters, pace);
                sent.fetch_add(iters * producers as u64, Ordering::Relaxed);
                lost.fetch_add(failed, Ordering::Relaxed);
                match measure {
                    Measure::Wall1 => wall,
                    Measure::CpuPerProducer | Measure::Paced(_) => cpu / producers as u32,
                    Measure::WallAll => wall / producers as u32,
                }
            })
        });
        eprintln!(
            "  [{name}] {}: try_send calls={} full={}",
            chan.name(),
            sent.load(Ordering::Relaxed),
            lost.load(Ordering::Relaxed)
        );
    }
    g.finish();
}

/// Sends spaced far apart (the consumer is parked by then), timed one by one: median and
/// 90th percentile of `sends` sends from each of `producers` threads. Outside criterion,
/// whose sampling would spend minutes in the pauses.
fn parked(producers: usize, pause: Duration, sends: usize) {
    for chan in Chan::ALL {
        let (tx, consumer): (Tx, Box<dyn FnOnce() + Send>) = match chan {
            Chan::Flume | Chan::FlumeAsync => {
                let (tx, rx) = flume::bounded::<Msg>(1 << 16);
                let drain: Box<dyn FnOnce() + Send> = if matches!(chan, Chan::Flume) {
                    Box::new(move || {
                        while let Ok(m) = rx.recv() {
                            black_box(m.0[0]);
                        }
                    })
                } else {
                    Box::new(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .build()
                            .expect("runtime");
                        runtime.block_on(async move {
                            while let Ok(m) = rx.recv_async().await {
                                black_box(m.0[0]);
                            }
                        });
                    })
                };
                (Tx::Flume(tx), drain)
            }
            Chan::Crossbeam => {
                let (tx, rx) = crossbeam_channel::bounded::<Msg>(1 << 16);
                (
                    Tx::Crossbeam(tx),
                    Box::new(move || {
                        while let Ok(m) = rx.recv() {
                            black_box(m.0[0]);
                        }
                    }),
                )
            }
            Chan::StdSync => {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(1 << 16);
                (
                    Tx::Std(tx),
                    Box::new(move || {
                        while let Ok(m) = rx.recv() {
                            black_box(m.0[0]);
                        }
                    }),
                )
            }
        };
        let consumer = std::thread::spawn(consumer);
        let mut times: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..producers)
                .map(|_| {
                    let tx = &tx;
                    scope.spawn(move || {
                        (0..sends as u64)
                            .map(|i| {
                                std::thread::sleep(pause);
                                let start = Instant::now();
                                black_box(tx.try_send(Msg([i; 25])));
                                start.elapsed()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("producer"))
                .collect()
        });
        drop(tx);
        consumer.join().expect("consumer");
        times.sort();
        let pct = |p: usize| {
            times
                .get(times.len() * p / 100)
                .copied()
                .unwrap_or_default()
        };
        println!(
            "channel_parked{}us_{producers}p/{}: median {:?}, p90 {:?} ({} sends)",
            pause.as_micros(),
            chan.name(),
            pct(50),
            pct(90),
            times.len()
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    group(&mut c, "channel_1p", 1, Measure::Wall1);
    group(&mut c, "channel_4p_cpu", 4, Measure::CpuPerProducer);
    group(&mut c, "channel_4p_wall", 4, Measure::WallAll);
    for (name, producers, us) in [
        ("channel_paced2us_1p", 1, 2),
        ("channel_paced2us_4p", 4, 2),
        ("channel_paced20us_1p", 1, 20),
        ("channel_paced20us_4p", 4, 20),
    ] {
        let pace = Measure::Paced(Duration::from_micros(us));
        group(&mut c, name, producers, pace);
    }
    c.final_summary();
    // `cargo test --benches` runs this without `--bench`: a quick smoke run then.
    let sends = if std::env::args().any(|a| a == "--bench") {
        1000
    } else {
        20
    };
    parked(1, Duration::from_micros(500), 2 * sends);
    parked(4, Duration::from_micros(500), sends);
}
