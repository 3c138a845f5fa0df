use super::*;
use crate::rows::record::{Fields, SpanHeader};

/// A `Registry` span id: the slab key (generation, thread, address) plus one
/// (`sharded-slab`'s default layout: 13 bits for the thread after the address).
fn registry_id(generation: u64, thread: u64, address: u64) -> u64 {
    ((generation << (REGISTRY_THREAD_SHIFT + 13)) | (thread << REGISTRY_THREAD_SHIFT) | address) + 1
}

/// Span data told apart by its exec counter.
fn data(n: u64) -> SpanData {
    let metadata = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        tracing::info_span!("in_the_map").metadata()
    })
    .expect("an enabled span has metadata");
    let header = SpanHeader {
        span_id: n,
        row_id: u128::from(n),
        root: crate::trace::ids::TraceId::random(),
        parent: None,
        exec_counter: n,
        start: crate::trace::clock::Stamp::now(),
        metadata,
        route: None,
    };
    SpanData::open(header, Fields::new(), true, false)
}

fn counter(map: &mut SpanMap, id: u64, by_thread: bool) -> Option<u64> {
    map.get_mut(id, by_thread).map(|d| d.header.exec_counter)
}

#[test]
fn threads_sharing_a_shard_keep_spans_at_the_same_address_apart() {
    let mut map = SpanMap::default();
    let (a, b) = (registry_id(0, 1, 5), registry_id(0, 33, 5));
    assert_eq!(shard_of(a, true), shard_of(b, true));
    assert!(map.insert(a, data(1), true).is_none());
    assert!(map.insert(b, data(2), true).is_none());
    assert_eq!(map.len(), 2);
    assert_eq!(counter(&mut map, a, true), Some(1));
    assert_eq!(counter(&mut map, b, true), Some(2));
    assert_eq!(map.remove(a, true).map(|d| d.header.exec_counter), Some(1));
    assert_eq!(counter(&mut map, a, true), None);
    assert_eq!(counter(&mut map, b, true), Some(2));
    // The address is free again: a new span of the first thread takes it.
    let c = registry_id(1, 1, 5);
    assert!(map.insert(c, data(3), true).is_none());
    assert_eq!(counter(&mut map, c, true), Some(3));
    assert_eq!(map.remove(b, true).map(|d| d.header.exec_counter), Some(2));
    assert_eq!(map.remove(c, true).map(|d| d.header.exec_counter), Some(3));
    assert!(map.is_empty());
    assert!(map.remove(c, true).is_none());
}

#[test]
fn a_span_that_never_closed_is_handed_back_when_its_id_comes_again() {
    let mut map = SpanMap::default();
    let (stale, new) = (registry_id(0, 3, 7), registry_id(1, 3, 7));
    assert!(map.insert(stale, data(1), true).is_none());
    // Its address given out again: both are kept.
    assert!(map.insert(new, data(2), true).is_none());
    assert_eq!(counter(&mut map, stale, true), Some(1));
    assert_eq!(counter(&mut map, new, true), Some(2));
    // The very same id again (a subscriber that reuses ids outright), kept by position
    // or not: the span that had it is handed back.
    let old = map.insert(new, data(3), true);
    assert_eq!(old.map(|d| d.header.exec_counter), Some(2));
    let old = map.insert(stale, data(4), true);
    assert_eq!(old.map(|d| d.header.exec_counter), Some(1));
    assert_eq!(map.len(), 2);
    // Closed at its address, then reused while a copy sits in the hash map.
    assert_eq!(
        map.remove(stale, true).map(|d| d.header.exec_counter),
        Some(4)
    );
    let old = map.insert(new, data(5), true);
    assert_eq!(old.map(|d| d.header.exec_counter), Some(3));
    assert_eq!(map.len(), 1);
    assert!(map.others.is_empty());
}

#[test]
fn far_addresses_and_ids_of_other_subscribers_go_to_the_hash_map() {
    let mut map = SpanMap::default();
    let far = registry_id(0, 2, MAX_DIRECT as u64 + 3);
    assert!(map.insert(far, data(1), true).is_none());
    assert!(map.insert(42, data(2), false).is_none());
    assert!(map.insert(43, data(3), false).is_none());
    assert_eq!(map.direct.len(), 0, "nothing kept by position");
    assert_eq!(map.len(), 3);
    assert_eq!(counter(&mut map, far, true), Some(1));
    assert_eq!(counter(&mut map, 43, false), Some(3));
    let mut all: Vec<u64> = map.values_mut().map(|d| d.header.exec_counter).collect();
    all.sort_unstable();
    assert_eq!(all, [1, 2, 3]);
    assert_eq!(
        map.remove(42, false).map(|d| d.header.exec_counter),
        Some(2)
    );
    assert_eq!(map.drain().len(), 2);
    assert!(map.is_empty());
}

#[test]
fn the_map_agrees_with_a_plain_hash_map() {
    // xorshift: the same sequence on every run.
    let mut seed = 0x1234_5678_9abc_def1_u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..40 {
        let mut map = SpanMap::default();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let mut next = 0_u64;
        let far = round % 2 == 0;
        for _ in 0..3000 {
            // A few generations, two threads sharing the shard, near and far addresses.
            let address = if far && rnd(10) == 0 {
                4096 + rnd(6000)
            } else {
                rnd(40)
            };
            let id = registry_id(rnd(3), [1, 33][rnd(2) as usize], address);
            match rnd(4) {
                0 | 1 => {
                    next += 1;
                    let old = map.insert(id, data(next), true);
                    assert_eq!(old.map(|d| d.header.exec_counter), model.insert(id, next));
                }
                2 => {
                    let got = map.remove(id, true).map(|d| d.header.exec_counter);
                    assert_eq!(got, model.remove(&id));
                }
                _ => assert_eq!(counter(&mut map, id, true), model.get(&id).copied()),
            }
            assert_eq!(map.len(), model.len());
            assert_eq!(map.in_direct, map.direct.iter().flatten().count());
            for (found, _) in map.direct.iter().flatten() {
                assert!(!map.others.contains_key(found), "an id in both places");
            }
        }
        let mut all: Vec<u64> = map.values_mut().map(|d| d.header.exec_counter).collect();
        all.sort_unstable();
        let mut want: Vec<u64> = model.values().copied().collect();
        want.sort_unstable();
        assert_eq!(all, want);
    }
}

#[test]
fn one_span_left_at_a_high_address_keeps_little_room() {
    let mut map = SpanMap::default();
    let top = MAX_DIRECT as u64 - 1;
    for a in 0..=top {
        assert!(map.insert(registry_id(0, 1, a), data(a), true).is_none());
    }
    for a in 0..top {
        assert!(map.remove(registry_id(0, 1, a), true).is_some());
    }
    assert!(
        map.direct.capacity() <= MIN_DIRECT,
        "{} slots kept for one span",
        map.direct.capacity()
    );
    assert_eq!(counter(&mut map, registry_id(0, 1, top), true), Some(top));
    let last = map.remove(registry_id(0, 1, top), true);
    assert_eq!(last.map(|d| d.header.exec_counter), Some(top));
    assert!(map.is_empty());
}

#[test]
fn the_room_does_not_grow_and_shrink_span_after_span() {
    let mut map = SpanMap::default();
    for a in 0..=5000 {
        assert!(map.insert(registry_id(0, 1, a), data(a), true).is_none());
    }
    for a in 0..5000 {
        assert!(map.remove(registry_id(0, 1, a), true).is_some());
    }
    // One span stays open at address 5000; spans open and close just above it.
    let settled = map.direct.len();
    let mut lens = Vec::new();
    for generation in 1..4 {
        let id = registry_id(generation, 1, 5001);
        assert!(map.insert(id, data(0), true).is_none());
        lens.push(map.direct.len());
        assert!(map.remove(id, true).is_some());
        lens.push(map.direct.len());
    }
    assert_eq!(lens, [settled; 6]);
    assert_eq!(map.len(), 1);
}

#[test]
fn the_room_of_a_burst_is_given_back() {
    let mut map = SpanMap::default();
    let ids: Vec<u64> = (0..20_000).map(|a| registry_id(0, 4, a)).collect();
    for (n, id) in ids.iter().enumerate() {
        assert!(map.insert(*id, data(n as u64), true).is_none());
    }
    assert_eq!(map.in_direct, 20_000);
    assert!(map.others.is_empty());
    // The oldest span stays open; the rest close.
    for id in &ids[1..] {
        assert!(map.remove(*id, true).is_some());
    }
    assert_eq!(map.len(), 1);
    assert!(
        map.direct.capacity() <= MIN_DIRECT,
        "{} slots kept for one span",
        map.direct.capacity()
    );
    assert_eq!(counter(&mut map, ids[0], true), Some(0));
}
