//! Tests of the overflow file: order, framing across chunks, the cap, failures.
use super::*;
use crate::rows::record::FieldValue;
use crate::trace::route::RouteTarget;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tb-backlog-{name}-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn metadata() -> &'static Metadata<'static> {
    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        tracing::info_span!("held", input = 1).metadata()
    })
    .expect("an enabled span has metadata")
}

fn header(i: u64, route: Option<Arc<Route>>) -> SpanHeader {
    SpanHeader {
        span_id: i + 1,
        row_id: u128::from(i) << 64 | 7,
        root: if i % 2 == 0 {
            TraceId::Hex(u128::from(i) + 99)
        } else {
            TraceId::Str(Arc::from(format!("legacy-{i}").as_str()))
        },
        parent: match i % 3 {
            0 => None,
            1 => Some(SpanId::Hex(i + 1000)),
            _ => Some(SpanId::Str(Arc::from("remote"))),
        },
        exec_counter: i,
        start: Stamp::from_raw(1_000 + i),
        metadata: metadata(),
        route,
    }
}

fn fields(i: u64) -> Fields {
    let mut f: Fields = [
        ("input", FieldValue::Str(format!("question {i}"))),
        ("llm.prompt_tokens", FieldValue::U64(i)),
    ]
    .into_iter()
    .collect();
    f.callsite = Some(metadata());
    f
}

fn close(i: u64, route: Option<Arc<Route>>) -> Message {
    Message::Close(ClosedSpan {
        header: header(i, route),
        fields: fields(i),
        error: (i % 4 == 0).then(|| Box::new(fields(i + 1))),
        end: Stamp::from_raw(5_000 + i),
        open_delivered: i % 5 == 0,
    })
}

/// A comparable rendering of a message (the types compare field by field).
fn describe(msg: &Message) -> String {
    match msg {
        Message::Open(o) => format!("open {:?} {:?}", o.header, o.fields),
        Message::Close(c) => format!(
            "close {:?} {:?} {:?} {:?} {}",
            c.header, c.fields, c.error, c.end, c.open_delivered
        ),
        Message::Event(e) => format!("event {e:?}"),
        _ => "control".into(),
    }
}

fn messages(n: u64) -> Vec<Message> {
    let route = Arc::new(Route {
        target: Some(RouteTarget::ExperimentId("exp-1".into())),
        ..Route::default()
    });
    (0..n)
        .map(|i| match i % 3 {
            0 => Message::Open(OpenSpan {
                header: header(i, None),
                fields: fields(i),
            }),
            1 => close(i, Some(Arc::clone(&route))),
            _ => Message::Event(EventRecord {
                row_id: u128::from(i),
                span_id: i,
                exec_counter: i,
                time: Stamp::from_raw(i),
                metadata: metadata(),
                root: TraceId::Hex(5),
                parent: Some(SpanId::Hex(3)),
                route: (i % 2 == 0).then(|| Arc::clone(&route)),
                fields: fields(i),
            }),
        })
        .collect()
}

#[test]
fn messages_come_back_whole_and_in_order_across_the_file_and_memory() {
    let dir = temp_dir("order");
    let mut backlog = Backlog::new(dir.clone(), u64::MAX);
    // Enough to write the file several times (1 MiB at a time) and keep a tail in
    // memory.
    let sent = messages(20_000);
    let expected: Vec<String> = sent.iter().map(describe).collect();
    let mut given_back = 0;
    for msg in sent {
        backlog.push(msg, |_| given_back += 1).expect("taken");
    }
    assert!(backlog.end > 2 * WRITE_BYTES as u64, "{}", backlog.end);
    assert!(!backlog.tail.is_empty());
    // Every field buffer (and error buffer) is handed back once copied.
    assert!(given_back >= 20_000);
    assert_eq!(backlog.rows_held, 20_000 - 6_667);
    let mut got = Vec::new();
    while !backlog.is_empty() {
        let chunk = backlog.pop(1024).expect("readable");
        assert!(!chunk.is_empty() && chunk.len() <= 1024);
        got.extend(chunk.iter().map(describe));
    }
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    assert_eq!(backlog.take_undecodable(), 0);
    // Emptied: the file is cut to nothing and the tables forgotten.
    let file_len = backlog
        .file
        .as_ref()
        .expect("file")
        .metadata()
        .expect("meta")
        .len();
    assert_eq!(file_len, 0);
    assert!(backlog.metadata.is_empty() && backlog.routes.is_empty());
    // And it takes messages again.
    backlog.push(close(1, None), |_| {}).expect("taken");
    assert_eq!(
        describe(&backlog.pop(10).expect("readable")[0]),
        describe(&close(1, None))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_file_never_appears_in_the_directory() {
    let dir = temp_dir("unlinked");
    let mut backlog = Backlog::new(dir.clone(), u64::MAX);
    for msg in messages(10_000) {
        backlog.push(msg, |_| {}).expect("taken");
    }
    assert!(backlog.end > 0, "written to the file");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    #[cfg(unix)]
    assert!(names.is_empty(), "{names:?}");
    drop(backlog);
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn past_the_cap_every_message_is_refused() {
    let dir = temp_dir("cap");
    let mut backlog = Backlog::new(dir.clone(), 4 * 1024);
    let mut refused = 0;
    for i in 0..200 {
        if let Err(Refused::Full(Message::Close(_))) = backlog.push(close(i, None), |_| {}) {
            refused += 1;
        }
    }
    assert!(refused > 100, "{refused}");
    assert!(backlog.is_full());
    let open = Message::Open(OpenSpan {
        header: header(7, None),
        fields: fields(7),
    });
    assert!(matches!(
        backlog.push(open, |_| {}),
        Err(Refused::Full(Message::Open(_)))
    ));
    let mut held = 0;
    while !backlog.is_empty() {
        held += backlog.pop(64).expect("readable").len();
    }
    assert_eq!(held, 200 - refused);
    assert!(!backlog.is_full());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unwritable_directory_holds_a_bounded_amount_in_memory_and_loses_nothing_taken() {
    let dir = temp_dir("unwritable");
    // A file where the directory should be.
    let blocked = dir.join("not-a-dir");
    std::fs::write(&blocked, b"x").expect("file");
    let mut backlog = Backlog::new(blocked.clone(), u64::MAX);
    let mut taken = 0;
    let mut i = 0;
    loop {
        match backlog.push(close(i, None), |_| {}) {
            Ok(()) => taken += 1,
            Err(Refused::Full(_)) => break,
            Err(Refused::Control(_)) => unreachable!("a close"),
        }
        i += 1;
    }
    assert!(backlog.broken);
    assert!(
        backlog.tail.len() < MEMORY_BYTES + 4096,
        "{}",
        backlog.tail.len()
    );
    // What was taken comes back, in order.
    let mut back = Vec::new();
    while !backlog.is_empty() {
        back.extend(backlog.pop(1000).expect("readable").iter().map(describe));
    }
    assert_eq!(back.len(), taken);
    assert_eq!(back[0], describe(&close(0, None)));
    // Emptied, it tries the file again (which works once the directory can be made).
    assert!(!backlog.broken);
    std::fs::remove_file(&blocked).expect("unblocked");
    for i in 0..20_000 {
        backlog.push(close(i, None), |_| {}).expect("taken");
    }
    assert!(backlog.end > 0 && !backlog.broken);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_control_message_is_never_taken() {
    let mut backlog = Backlog::new(temp_dir("control"), u64::MAX);
    let (reply, _) = crossbeam_channel::bounded(1);
    assert!(matches!(
        backlog.push(Message::Flush(reply), |_| {}),
        Err(Refused::Control(Message::Flush(_)))
    ));
    assert!(backlog.is_empty());
}

#[test]
fn under_a_steady_flow_that_never_empties_it_the_file_and_tables_stay_bounded() {
    let dir = temp_dir("steady");
    let mut backlog = Backlog::new(dir.clone(), u64::MAX);
    let mut next = 0u64;
    let mut expected = 0u64;
    // Each round: 8,000 messages in (more than a write of the file), each with a route
    // of its own (a remote trace each), then all but the last 100 read back: the backlog
    // is never empty.
    let mut most = 0;
    for _ in 0..8 {
        for _ in 0..8_000 {
            let route = Arc::new(Route::default());
            backlog
                .push(close(next, Some(route)), |_| {})
                .expect("taken");
            next += 1;
        }
        while backlog.held() > 100 {
            let want = usize::try_from(backlog.held() - 100).expect("small");
            for msg in backlog.pop(want.min(512)).expect("readable") {
                let Message::Close(c) = msg else {
                    unreachable!()
                };
                assert_eq!(c.header.exec_counter, expected);
                expected += 1;
            }
        }
        assert!(!backlog.is_empty());
        most = most.max(backlog.end);
    }
    // 64,000 messages went through (over 10 MiB, written a MiB at a time); the file holds
    // what was not read yet, not all of it, and only the held messages' routes are kept.
    assert!(most > WRITE_BYTES as u64, "the file was used: {most}");
    assert!(most < 4 * WRITE_BYTES as u64, "{most}");
    assert!(backlog.routes.len() <= 100, "{}", backlog.routes.len());
    assert_eq!(backlog.routes.len(), backlog.route_index.len());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_cap_of_zero_still_takes_one_message_at_a_time() {
    let dir = temp_dir("zero");
    let mut backlog = Backlog::new(dir.clone(), 0);
    assert!(!backlog.is_full(), "an empty backlog takes a message");
    backlog.push(close(1, None), |_| {}).expect("taken");
    assert!(backlog.is_full());
    assert_eq!(backlog.pop(10).expect("readable").len(), 1);
    assert!(!backlog.is_full());
    let _ = std::fs::remove_dir_all(dir);
}
