//! Head sampling by trace: one keep-or-drop decision per trace, the same in every process.
//!
//! The decision is a pure function of the trace's root id and the rate, computed the way
//! OpenTelemetry's `TraceIdRatioBased` sampler does it (the Rust, Go and Java SDKs agree): the
//! low 64 bits of the 128-bit trace id, shifted right by one, are compared against
//! `rate * 2^63`. A process that continues a trace from an exported parent knows the same root
//! id and so reaches the same decision as the process that started it, and a trace kept at
//! some rate is also kept at every higher rate.
//!
//! Braintrust's default ids (protocol §5.1) make `root_span_id` 32 hex characters, i.e. a
//! 128-bit trace id, which is used as it is. Legacy UUID ids are hashed instead of parsed: a
//! UUID's version and variant bits are fixed, and its variant bits sit exactly in the top of
//! the low half that the comparison looks at, which would bias the decision.

/// `2^63` as a float, the scale of the comparison.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Decides whether to keep the trace whose 128-bit root id is `root_span_id`, keeping a
/// fraction `rate` of all traces.
///
/// Deterministic: the same id and rate give the same answer in every process and on every
/// platform. The low 64 bits of the id, shifted right by one, are compared against
/// `rate * 2^63`, as OpenTelemetry's `TraceIdRatioBased` sampler does.
///
/// `rate <= 0` (including `-0.0` and negative infinity) keeps nothing; `rate >= 1` keeps
/// everything; a NaN rate is treated as `1.0` and keeps everything (a broken configuration
/// value should not silently drop all data).
pub(crate) fn keep_trace(root_span_id: u128, rate: f64) -> bool {
    if rate.is_nan() || rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    // `as` saturates; rate is in (0, 1) here, so the bound is in [0, 2^63].
    let upper_bound = (rate * TWO_POW_63) as u64;
    let low = root_span_id as u64;
    (low >> 1) < upper_bound
}

/// Like [`keep_trace`], for a root span id as it appears in a row.
///
/// A string of exactly 32 hex digits (either case) is read as a big-endian 128-bit trace id.
/// Anything else (legacy UUID ids, arbitrary strings, the empty string) is hashed with 64-bit
/// FNV-1a over its UTF-8 bytes followed by the `fmix64` finaliser of MurmurHash3 (so every
/// input bit affects the bits the comparison reads), and the result used as the low 64 bits.
/// Both steps are fixed, so the answer is stable across processes, platforms and versions.
pub(crate) fn keep_trace_str(root_span_id: &str, rate: f64) -> bool {
    keep_trace(trace_bits(root_span_id), rate)
}

/// The 128-bit value the decision is based on for a string root id.
fn trace_bits(root_span_id: &str) -> u128 {
    let bytes = root_span_id.as_bytes();
    if bytes.len() == 32 && bytes.iter().all(u8::is_ascii_hexdigit) {
        // `from_str_radix` alone would also accept a leading `+`; the check above rules it out.
        if let Ok(id) = u128::from_str_radix(root_span_id, 16) {
            return id;
        }
    }
    u128::from(stable_hash(bytes))
}

/// FNV-1a 64 followed by MurmurHash3's `fmix64` avalanche step.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 100_000;

    /// Asserts that `kept` out of `N` is within 6 standard deviations of `N * rate`.
    fn assert_ratio(kept: usize, rate: f64, what: &str) {
        let n = N as f64;
        let mean = n * rate;
        let sd = (n * rate * (1.0 - rate)).sqrt();
        let diff = (kept as f64 - mean).abs();
        assert!(
            diff <= 6.0 * sd,
            "{what}: kept {kept} of {N} at rate {rate}, expected {mean} ± {}",
            6.0 * sd
        );
    }

    fn uuid_like(rng: &mut fastrand::Rng) -> String {
        let v = rng.u128(..);
        let hex = format!("{v:032x}");
        format!(
            "{}-{}-4{}-a{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }

    #[test]
    fn zero_and_one() {
        for id in [
            0u128,
            1,
            u128::MAX,
            0x8000_0000_0000_0000,
            0x7fff_ffff_ffff_ffff,
        ] {
            assert!(!keep_trace(id, 0.0));
            assert!(!keep_trace(id, -0.0));
            assert!(!keep_trace(id, -3.0));
            assert!(!keep_trace(id, f64::NEG_INFINITY));
            assert!(keep_trace(id, 1.0));
            assert!(keep_trace(id, 7.5));
            assert!(keep_trace(id, f64::INFINITY));
            assert!(keep_trace(id, f64::NAN), "NaN keeps everything");
        }
        assert!(!keep_trace_str("anything", 0.0));
        assert!(keep_trace_str("anything", 1.0));
        assert!(keep_trace_str("", f64::NAN));
    }

    #[test]
    fn uses_the_low_bits_like_opentelemetry() {
        // Low 64 bits all ones: the largest 63-bit value, dropped below rate 1.
        assert!(!keep_trace(u128::from(u64::MAX), 0.999_999));
        // Low 64 bits zero: kept at any positive rate, whatever the high bits.
        assert!(keep_trace(u128::MAX << 64, 1e-9));
        // 2^62 in the shifted value is exactly the bound at rate 0.5.
        let half = u128::from(1u64 << 63);
        assert!(!keep_trace(half, 0.5));
        assert!(keep_trace(half - 2, 0.5));
        // High bits do not matter.
        assert_eq!(
            keep_trace(half, 0.6),
            keep_trace(half | (1u128 << 100), 0.6)
        );
    }

    #[test]
    fn hex_ids_parse_as_u128() {
        let id = "56ec3ccfe4ec838c08c4a89c624e7715";
        assert_eq!(trace_bits(id), 0x56ec3ccfe4ec838c08c4a89c624e7715);
        assert_eq!(trace_bits(&id.to_uppercase()), trace_bits(id));
        for rate in [0.01, 0.3, 0.5, 0.99] {
            assert_eq!(
                keep_trace_str(id, rate),
                keep_trace(0x56ec3ccfe4ec838c08c4a89c624e7715, rate)
            );
        }
        // Not 32 hex digits: hashed, not parsed.
        let plus = "+6ec3ccfe4ec838c08c4a89c624e7715";
        assert_eq!(trace_bits(plus), u128::from(stable_hash(plus.as_bytes())));
        assert_eq!(trace_bits("abc"), u128::from(stable_hash(b"abc")));
    }

    #[test]
    fn decisions_are_deterministic_and_monotonic() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1_000 {
            let id = rng.u128(..);
            let s = uuid_like(&mut rng);
            for rate in [0.05, 0.5, 0.95] {
                assert_eq!(keep_trace(id, rate), keep_trace(id, rate));
                assert_eq!(keep_trace_str(&s, rate), keep_trace_str(&s.clone(), rate));
                // Kept at a rate implies kept at every higher rate.
                if keep_trace(id, rate) {
                    assert!(keep_trace(id, rate + 0.01));
                }
                if keep_trace_str(&s, rate) {
                    assert!(keep_trace_str(&s, rate + 0.01));
                }
            }
        }
    }

    #[test]
    fn hash_is_pinned() {
        // The hash is part of the cross-process contract: these values must never change.
        // (FNV-1a 64 of "" is 0xcbf29ce484222325 and of "a" 0xaf63dc4c8601ec8c, then fmix64.)
        assert_eq!(stable_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(stable_hash(b"a"), 0x82a2_a958_a9be_ce5b);
        assert_eq!(
            stable_hash(b"4fc16a4b-46e2-4b5d-98d3-86a29c411826"),
            0x40c0_f560_4174_b3b4
        );
    }

    #[test]
    fn ratio_over_random_trace_ids() {
        for rate in [0.1, 0.5, 0.9] {
            let mut rng = fastrand::Rng::with_seed(0x5eed);
            let kept = (0..N).filter(|_| keep_trace(rng.u128(..), rate)).count();
            assert_ratio(kept, rate, "u128 ids");

            let mut rng = fastrand::Rng::with_seed(0x5eed);
            let kept = (0..N)
                .filter(|_| keep_trace_str(&format!("{:032x}", rng.u128(..)), rate))
                .count();
            assert_ratio(kept, rate, "hex ids");

            let mut rng = fastrand::Rng::with_seed(0xface);
            let kept = (0..N)
                .filter(|_| keep_trace_str(&uuid_like(&mut rng), rate))
                .count();
            assert_ratio(kept, rate, "uuid ids");
        }
    }
}
