//! The queue's overflow on disk: when spilling is on and the worker falls behind a burst,
//! it moves queued messages, as captured, to a file of its own instead of building rows
//! from them, and builds their rows later, in order, once the burst is over.
//!
//! Building a row costs the worker a few microseconds; copying a span's captured fields to
//! a file costs a fraction of one. A burst of 200 000 spans from four threads arrives in
//! about a fifth of a second on two cores: no worker builds rows that fast, and holding the
//! burst in memory costs about 150 MiB, but the worker can move it to disk as it comes
//! (docs/reliability.md has the figures).
//!
//! The file is this process's alone: it is removed from the directory as soon as it is
//! created (the open handle keeps it), so it never outlives the process. The messages in it
//! name their callsite and route by an index into tables this module keeps in memory; the
//! process that wrote them is the only one that can read them. The rows it holds are
//! counted as backlogged (in flight): received (and then sent, spooled or failed) when read
//! back, dropped if they cannot be (a shutdown out of time, a read error).
//!
//! Messages are framed by their length, and read back a chunk at a time, so the memory the
//! backlog uses is bounded by its two buffers (about [`WRITE_BYTES`] each) and its tables.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use tracing_core::Metadata;

use crate::rows::queue::{ClosedSpan, Message, OpenSpan};
use crate::rows::record::{Fields, SpanHeader};
use crate::rows::row::EventRecord;
use crate::trace::clock::Stamp;
use crate::trace::ids::{SpanId, TraceId};
use crate::trace::route::Route;

/// Encoded messages are written to the file this many bytes at a time.
const WRITE_BYTES: usize = 1 << 20;

/// Read back this many bytes of the file at a time.
const READ_BYTES: usize = 1 << 20;

/// The most messages held (besides the byte cap): about five seconds of the worker's time
/// to build their rows in a release build, so that a shutdown can deliver or spool them.
pub(crate) const MAX_MESSAGES: u64 = 1_000_000;

const OPEN: u8 = 0;
const CLOSE: u8 = 1;
const EVENT: u8 = 2;

/// While the file cannot be written, messages are held in memory up to this many bytes.
const MEMORY_BYTES: usize = 8 << 20;

/// Why a message was not taken.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The backlog is full (see [`Backlog::is_full`]).
    Full(Message),
    /// Not a data message (a control message carries a reply channel: it is never held).
    Control(Message),
}

/// The overflow file and what is needed to read it back.
pub(crate) struct Backlog {
    dir: PathBuf,
    max_bytes: u64,
    file: Option<File>,
    /// Set when the file could not be created or written: until the backlog is empty
    /// again, messages are held in memory only, up to [`MEMORY_BYTES`].
    broken: bool,
    /// Encoded messages not yet written to the file.
    tail: Vec<u8>,
    /// The file's bytes already read and not yet decoded (a message cut by a chunk's end).
    read: Vec<u8>,
    /// Where the next read starts, and the file's end.
    head: u64,
    end: u64,
    /// Messages held (in the file and the buffers), and how many of them are rows.
    held: u64,
    rows_held: u64,
    /// Where decoding resumes in `read`.
    pos: usize,
    /// Rows read back that did not decode (a bug, or a damaged disk), not yet reported.
    undecodable_rows: u64,
    /// The files' names, where an open file could not be removed.
    leftover: Vec<PathBuf>,
    metadata: Vec<&'static Metadata<'static>>,
    metadata_index: HashMap<usize, u32>,
    /// The last callsite looked up (its address, 0 for none) and its index.
    last_metadata: (usize, u32),
    /// The routes of held messages by number, with how many held messages name each (a
    /// route is forgotten when the last one is read back: a route per remote trace would
    /// otherwise pile up while the backlog never empties).
    routes: HashMap<u32, (Arc<Route>, u64)>,
    route_index: HashMap<usize, u32>,
    next_route: u32,
}

impl std::fmt::Debug for Backlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backlog")
            .field("dir", &self.dir)
            .field("held", &self.held)
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl Backlog {
    /// A backlog whose file (created on first need) goes in `dir`, holding at most
    /// `max_bytes` of encoded messages.
    pub(crate) fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Backlog {
            dir,
            max_bytes,
            file: None,
            broken: false,
            tail: Vec::new(),
            read: Vec::new(),
            head: 0,
            end: 0,
            held: 0,
            rows_held: 0,
            pos: 0,
            undecodable_rows: 0,
            leftover: Vec::new(),
            metadata: Vec::new(),
            metadata_index: HashMap::new(),
            last_metadata: (0, 0),
            routes: HashMap::new(),
            route_index: HashMap::new(),
            next_route: 0,
        }
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// How many messages are held.
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// Encoded bytes held.
    fn bytes(&self) -> u64 {
        self.end - self.head + (self.read.len() - self.pos + self.tail.len()) as u64
    }

    /// Whether it takes no more messages: it holds its byte cap, [`MAX_MESSAGES`], or,
    /// while the file cannot be written, [`MEMORY_BYTES`] in memory.
    pub(crate) fn is_full(&self) -> bool {
        // Something is always taken (a cap of 0 would otherwise stop the worker taking
        // from the queue at all).
        (self.held > 0 && self.bytes() >= self.max_bytes)
            || self.held >= MAX_MESSAGES
            || (self.broken && self.tail.len() >= MEMORY_BYTES)
    }

    /// Takes a data message (never a control message: those carry a reply channel). Its
    /// field buffers are handed to `done` once copied, for reuse.
    // A refused message is handed back whole, to be handled at once: boxing it would cost
    // an allocation on the worker's fastest path.
    #[allow(clippy::result_large_err)]
    pub(crate) fn push(
        &mut self,
        msg: Message,
        mut done: impl FnMut(Fields),
    ) -> Result<(), Refused> {
        if !matches!(
            msg,
            Message::Open(_) | Message::Close(_) | Message::Event(_)
        ) {
            return Err(Refused::Control(msg));
        }
        if self.is_full() {
            return Err(Refused::Full(msg));
        }
        let start = self.tail.len();
        // Room for the header and the fields at once (one capacity check).
        let fields_len = match &msg {
            Message::Open(o) => o.fields.buf.len(),
            Message::Close(c) => c.fields.buf.len() + c.error.as_ref().map_or(0, |e| e.buf.len()),
            Message::Event(e) => e.fields.buf.len(),
            _ => 0,
        };
        self.tail.reserve(128 + fields_len);
        self.tail.extend_from_slice(&[0; 4]);
        let is_row = match msg {
            Message::Open(open) => {
                self.tail.push(OPEN);
                self.header(&open.header);
                self.fields(&open.fields);
                done(open.fields);
                false
            }
            Message::Close(close) => {
                self.tail.push(CLOSE);
                self.header(&close.header);
                self.fields(&close.fields);
                self.u64(close.end.raw());
                self.tail.push(u8::from(close.open_delivered));
                match close.error {
                    Some(error) => {
                        self.tail.push(1);
                        self.fields(&error);
                        done(*error);
                    }
                    None => self.tail.push(0),
                }
                done(close.fields);
                true
            }
            Message::Event(event) => {
                self.tail.push(EVENT);
                self.u128(event.row_id);
                self.u64(event.span_id);
                self.u64(event.exec_counter);
                self.u64(event.time.raw());
                self.metadata(event.metadata);
                self.trace_id(&event.root);
                self.parent(event.parent.as_ref());
                self.route(event.route.as_ref());
                self.fields(&event.fields);
                done(event.fields);
                true
            }
            _ => unreachable!("control messages are refused above"),
        };
        let len = u32::try_from(self.tail.len() - start - 4).unwrap_or(u32::MAX);
        self.tail[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.held += 1;
        self.rows_held += u64::from(is_row);
        if self.tail.len() >= WRITE_BYTES {
            self.write_tail();
        }
        Ok(())
    }

    /// Writes the encoded messages waiting in memory to the file. A failure keeps them in
    /// memory (they are read back from there), and so are later ones until the backlog is
    /// empty again.
    fn write_tail(&mut self) {
        if self.tail.is_empty() || self.broken {
            return;
        }
        if self.head == self.end && self.end > 0 {
            // Everything in the file was read: it starts again from nothing, so that it
            // does not grow for as long as the backlog never empties.
            if self.file.as_mut().is_some_and(|f| f.set_len(0).is_ok()) {
                self.head = 0;
                self.end = 0;
            }
        }
        let end = self.end;
        let tail = std::mem::take(&mut self.tail);
        let result = self.file().and_then(|f| {
            f.seek(SeekFrom::Start(end))?;
            f.write_all(&tail)
        });
        self.tail = tail;
        match result {
            Ok(()) => {
                self.end += self.tail.len() as u64;
                self.tail.clear();
            }
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        self.broken = true;
        crate::diag::warn(
            "backlog-write",
            format_args!(
                "cannot write the queue's overflow file in {} ({e}); it holds at most {} MiB in memory meanwhile, and spans beyond are dropped (FlushReport::dropped)",
                self.dir.display(),
                MEMORY_BYTES >> 20
            ),
        );
    }

    /// The file, created on first use and removed from the directory at once.
    fn file(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let path = self.dir.join(format!(
                "backlog-{}-{:016x}.tmp",
                std::process::id(),
                fastrand::u64(..)
            ));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            // The open handle keeps the file; the directory forgets it, so it goes with the
            // process however the process ends. (Where an open file cannot be removed, it is
            // removed when the backlog is dropped.)
            if std::fs::remove_file(&path).is_err() {
                self.leftover.push(path);
            }
            self.file = Some(file);
        }
        match self.file.as_mut() {
            Some(f) => Ok(f),
            None => Err(std::io::Error::other("the overflow file is gone")),
        }
    }

    /// Reads back up to `max` messages, oldest first (none when empty). Fails only when the
    /// file cannot be read and nothing was read before: the caller then gives up what is
    /// held ([`Backlog::give_up`]).
    pub(crate) fn pop(&mut self, max: usize) -> std::io::Result<Vec<Message>> {
        let mut out = Vec::with_capacity(max.min(self.held as usize));
        while out.len() < max && self.held > 0 {
            if let Some(msg) = self.decode_next() {
                out.push(msg);
                continue;
            }
            // Keep only the undecoded part before reading more.
            self.read.drain(..self.pos);
            self.pos = 0;
            if self.head < self.end {
                if let Err(e) = self.fill() {
                    if out.is_empty() {
                        return Err(e);
                    }
                    // What was read is handed out; the next call meets the error again.
                    break;
                }
            } else if !self.tail.is_empty() {
                // The file is read to its end: the rest is still in memory.
                self.read.extend_from_slice(&self.tail);
                self.tail.clear();
            } else {
                // Nothing left to decode although messages are counted (a bug): they are
                // counted as lost, so that the worker does not wait for them forever.
                self.undecodable_rows += self.rows_held;
                self.held = 0;
                self.rows_held = 0;
            }
        }
        if self.held == 0 {
            self.reset();
        }
        Ok(out)
    }

    /// [`pop`](Self::pop), with what cannot be read back counted instead: the rows of
    /// messages that did not decode, or, after a read error (returned third), everything
    /// held, given up.
    pub(crate) fn pop_counting(
        &mut self,
        max: usize,
    ) -> (Vec<Message>, u64, Option<std::io::Error>) {
        match self.pop(max) {
            Ok(msgs) => (msgs, self.take_undecodable(), None),
            Err(e) => {
                let lost = self.take_undecodable() + self.give_up();
                (Vec::new(), lost, Some(e))
            }
        }
    }

    /// Reads the next chunk of the file into `read`.
    fn fill(&mut self) -> std::io::Result<()> {
        let want = usize::try_from(self.end - self.head)
            .unwrap_or(usize::MAX)
            .min(READ_BYTES);
        let head = self.head;
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("the overflow file is gone"));
        };
        file.seek(SeekFrom::Start(head))?;
        let start = self.read.len();
        self.read.resize(start + want, 0);
        if let Err(e) = file.read_exact(&mut self.read[start..]) {
            self.read.truncate(start);
            return Err(e);
        }
        self.head += want as u64;
        Ok(())
    }

    /// Forgets everything held, after a read failed: returns how many rows were lost.
    fn give_up(&mut self) -> u64 {
        let lost = self.rows_held;
        self.held = 0;
        self.rows_held = 0;
        self.tail.clear();
        self.reset();
        // The file is suspect: a new one is made if needed.
        self.file = None;
        lost
    }

    /// Empty again: the file is cut to nothing and the tables are cleared.
    fn reset(&mut self) {
        self.read.clear();
        self.pos = 0;
        self.head = 0;
        self.end = 0;
        if let Some(f) = self.file.as_mut() {
            if self.broken || f.set_len(0).is_err() {
                self.file = None;
            }
        }
        // The file may be writable again.
        self.broken = false;
        self.metadata.clear();
        self.metadata_index.clear();
        self.last_metadata = (0, 0);
        self.routes.clear();
        self.route_index.clear();
        self.next_route = 0;
        // Buffers that grew for a burst shrink back.
        self.read.shrink_to(READ_BYTES);
        self.tail.shrink_to(WRITE_BYTES);
    }

    /// Decodes the next whole message in `read`, if there is one.
    fn decode_next(&mut self) -> Option<Message> {
        loop {
            let rest = &self.read[self.pos..];
            if rest.len() < 5 {
                return None;
            }
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if rest.len() < 4 + len {
                return None;
            }
            let is_row = matches!(rest[4], CLOSE | EVENT);
            let mut r = Reader {
                bytes: &rest[4..4 + len],
                metadata: &self.metadata,
                routes: &mut self.routes,
                route_index: &mut self.route_index,
            };
            let decoded = r.message();
            self.pos += 4 + len;
            self.held -= 1;
            self.rows_held -= u64::from(is_row);
            match decoded {
                Some(msg) => return Some(msg),
                // Only this module writes the file: a message that does not decode is a
                // bug (or a damaged disk). It is skipped, and counted by the caller.
                None => self.undecodable_rows += u64::from(is_row),
            }
        }
    }

    /// Rows read back that did not decode since the last call (counted as dropped).
    fn take_undecodable(&mut self) -> u64 {
        std::mem::take(&mut self.undecodable_rows)
    }

    // --- Encoding. ---

    fn u64(&mut self, v: u64) {
        self.tail.extend_from_slice(&v.to_le_bytes());
    }

    fn u128(&mut self, v: u128) {
        self.tail.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.tail.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes_field(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.tail.extend_from_slice(b);
    }

    fn metadata(&mut self, m: &'static Metadata<'static>) {
        let key = std::ptr::from_ref(m) as usize;
        // Most messages in a burst come from one callsite: no hashing for them.
        if self.last_metadata.0 == key {
            let index = self.last_metadata.1;
            self.u32(index);
            return;
        }
        let index = match self.metadata_index.get(&key) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.metadata.len()).unwrap_or(u32::MAX);
                self.metadata.push(m);
                self.metadata_index.insert(key, i);
                i
            }
        };
        self.last_metadata = (key, index);
        self.u32(index);
    }

    /// 0 for none, else the index plus one.
    fn route(&mut self, route: Option<&Arc<Route>>) {
        let Some(route) = route else {
            self.u32(0);
            return;
        };
        let key = Arc::as_ptr(route) as usize;
        let id = match self.route_index.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.next_route;
                self.next_route = self.next_route.wrapping_add(1) % (u32::MAX - 1);
                self.routes.insert(id, (Arc::clone(route), 0));
                self.route_index.insert(key, id);
                id
            }
        };
        if let Some((_, uses)) = self.routes.get_mut(&id) {
            *uses += 1;
        }
        self.u32(id + 1);
    }

    fn trace_id(&mut self, id: &TraceId) {
        match id {
            TraceId::Hex(v) => {
                self.tail.push(0);
                self.u128(*v);
            }
            TraceId::Str(s) => {
                self.tail.push(1);
                self.bytes_field(s.as_bytes());
            }
        }
    }

    fn parent(&mut self, id: Option<&SpanId>) {
        match id {
            None => self.tail.push(0),
            Some(SpanId::Hex(v)) => {
                self.tail.push(1);
                self.u64(*v);
            }
            Some(SpanId::Str(s)) => {
                self.tail.push(2);
                self.bytes_field(s.as_bytes());
            }
        }
    }

    fn header(&mut self, h: &SpanHeader) {
        self.u64(h.span_id);
        self.u128(h.row_id);
        self.trace_id(&h.root);
        self.parent(h.parent.as_ref());
        self.u64(h.exec_counter);
        self.u64(h.start.raw());
        self.metadata(h.metadata);
        self.route(h.route.as_ref());
    }

    fn fields(&mut self, f: &Fields) {
        match f.callsite {
            Some(m) => {
                self.tail.push(1);
                self.metadata(m);
            }
            None => self.tail.push(0),
        }
        self.bytes_field(&f.buf);
    }
}

impl Drop for Backlog {
    fn drop(&mut self) {
        self.file = None;
        for path in self.leftover.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Decodes one message.
struct Reader<'a> {
    bytes: &'a [u8],
    metadata: &'a [&'static Metadata<'static>],
    routes: &'a mut HashMap<u32, (Arc<Route>, u64)>,
    route_index: &'a mut HashMap<usize, u32>,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }

    fn text(&mut self) -> Option<Arc<str>> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        Some(Arc::from(std::str::from_utf8(bytes).ok()?))
    }

    fn metadata(&mut self) -> Option<&'static Metadata<'static>> {
        self.metadata.get(self.u32()? as usize).copied()
    }

    fn route(&mut self) -> Option<Option<Arc<Route>>> {
        match self.u32()? {
            0 => Some(None),
            n => {
                let id = n - 1;
                let (route, uses) = self.routes.get_mut(&id)?;
                let route = Arc::clone(route);
                *uses -= 1;
                if *uses == 0 {
                    // The last held message that names it.
                    self.routes.remove(&id);
                    self.route_index.remove(&(Arc::as_ptr(&route) as usize));
                }
                Some(Some(route))
            }
        }
    }

    fn trace_id(&mut self) -> Option<TraceId> {
        match self.u8()? {
            0 => Some(TraceId::Hex(self.u128()?)),
            1 => Some(TraceId::Str(self.text()?)),
            _ => None,
        }
    }

    fn parent(&mut self) -> Option<Option<SpanId>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(SpanId::Hex(self.u64()?))),
            2 => Some(Some(SpanId::Str(self.text()?))),
            _ => None,
        }
    }

    fn header(&mut self) -> Option<SpanHeader> {
        Some(SpanHeader {
            span_id: self.u64()?,
            row_id: self.u128()?,
            root: self.trace_id()?,
            parent: self.parent()?,
            exec_counter: self.u64()?,
            start: Stamp::from_raw(self.u64()?),
            metadata: self.metadata()?,
            route: self.route()?,
        })
    }

    fn fields(&mut self) -> Option<Fields> {
        let callsite = match self.u8()? {
            0 => None,
            1 => Some(self.metadata()?),
            _ => return None,
        };
        let len = self.u32()? as usize;
        let buf = self.take(len)?.to_vec();
        Some(Fields { buf, callsite })
    }

    fn message(&mut self) -> Option<Message> {
        let msg = match self.u8()? {
            OPEN => Message::Open(OpenSpan {
                header: self.header()?,
                fields: self.fields()?,
            }),
            CLOSE => {
                let header = self.header()?;
                let fields = self.fields()?;
                let end = Stamp::from_raw(self.u64()?);
                let open_delivered = self.u8()? != 0;
                let error = match self.u8()? {
                    0 => None,
                    _ => Some(Box::new(self.fields()?)),
                };
                Message::Close(ClosedSpan {
                    header,
                    fields,
                    error,
                    end,
                    open_delivered,
                })
            }
            EVENT => Message::Event(EventRecord {
                row_id: self.u128()?,
                span_id: self.u64()?,
                exec_counter: self.u64()?,
                time: Stamp::from_raw(self.u64()?),
                metadata: self.metadata()?,
                root: self.trace_id()?,
                parent: self.parent()?,
                route: self.route()?,
                fields: self.fields()?,
            }),
            _ => return None,
        };
        self.bytes.is_empty().then_some(msg)
    }
}

#[cfg(test)]
#[path = "backlog_tests.rs"]
mod tests;
