//! Reading an object's rows page by page: `POST /v1/{dataset,experiment,project_logs}/{id}/fetch`
//! (protocol §4.4, §10.3), following the cursor until none comes back.
//!
//! Pages run from the latest `_xact_id` to the earliest, and a later page may repeat a row
//! already seen in an older version; such repeats are dropped (by `id`, keeping the latest
//! `_xact_id`), which the Python SDK does not do. Rows are handed out as they arrive: only
//! one page and the ids seen so far (with their `_xact_id`) are held, never the whole
//! object.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};

use futures_util::stream::{self, Stream};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::{Api, RestError, ordered_json};

/// Rows asked for per page (the Python SDK's default batch).
pub(crate) const FETCH_LIMIT: usize = 1000;

/// One fetched row.
pub(crate) type Event = Map<String, Value>;

/// Compares two `_xact_id`s. They are decimal strings of one width (compared as strings by
/// the Python SDK); a shorter one is the smaller, so ids of different widths still order
/// as numbers.
pub(crate) fn xact_cmp(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// A row's `_xact_id` as text (a number is accepted too).
pub(crate) fn xact_of(event: &Event) -> Option<String> {
    match event.get("_xact_id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn id_of(event: &Event) -> Option<&str> {
    event.get("id").and_then(Value::as_str)
}

/// The pages of one object, read one at a time.
#[derive(Debug)]
pub(crate) struct Fetcher {
    api: Api,
    path: String,
    limit: usize,
    version: Option<String>,
    cursor: Option<String>,
    started: bool,
    page: VecDeque<Event>,
    /// Every id handed out so far, with the `_xact_id` of the version handed out.
    seen: HashMap<String, String>,
}

impl Fetcher {
    /// A fetch of `path` (`v1/dataset/{id}/fetch`, ...), `limit` rows a page, at `version`
    /// when one is pinned.
    pub(crate) fn new(api: Api, path: String, limit: usize, version: Option<String>) -> Self {
        Fetcher {
            api,
            path,
            limit: limit.max(1),
            version,
            cursor: None,
            started: false,
            page: VecDeque::new(),
            seen: HashMap::new(),
        }
    }

    /// The body of the next request, keys in the Python SDK's order.
    fn body(&self) -> String {
        let mut body = vec![("limit", json!(self.limit))];
        if let Some(cursor) = &self.cursor {
            body.push(("cursor", json!(cursor)));
        }
        if let Some(version) = &self.version {
            body.push(("version", json!(version)));
        }
        ordered_json(&body)
    }

    /// Whether another page may follow.
    fn more(&self) -> bool {
        !self.started || self.cursor.is_some()
    }

    /// Reads pages until one holds a row not seen before, or none is left. `Ok(false)` when
    /// the object is read to the end.
    pub(crate) async fn fill(&mut self) -> Result<bool, RestError> {
        while self.page.is_empty() {
            if !self.more() {
                return Ok(false);
            }
            let answer = self
                .api
                .call_text(Method::POST, &self.path, Some(self.body()), false, true)
                .await?;
            self.started = true;
            self.cursor = answer
                .get("cursor")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            let events = match answer.get("events") {
                Some(Value::Array(events)) => events.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(_) => {
                    return Err(RestError {
                        status: None,
                        message: format!(
                            "POST {} answered \"events\" that is not a list",
                            self.path
                        ),
                    });
                }
            };
            if events.is_empty() {
                // An empty page ends the fetch even if it carries a cursor.
                self.cursor = None;
            }
            self.take_page(events);
        }
        Ok(true)
    }

    /// Keeps the rows of a page not seen before, the latest version of each id.
    fn take_page(&mut self, events: Vec<Value>) {
        let mut latest: HashMap<String, usize> = HashMap::new();
        let mut kept: Vec<Option<Event>> = Vec::with_capacity(events.len());
        for event in events {
            let Value::Object(event) = event else {
                continue;
            };
            let Some(id) = id_of(&event).map(str::to_owned) else {
                kept.push(Some(event));
                continue;
            };
            if self.seen.contains_key(&id) {
                continue;
            }
            let xact = xact_of(&event).unwrap_or_default();
            match latest.get(&id) {
                Some(&at) => {
                    let older = kept[at].as_ref().and_then(xact_of).unwrap_or_default();
                    if xact_cmp(&xact, &older) == Ordering::Greater {
                        kept[at] = Some(event);
                    }
                }
                None => {
                    latest.insert(id, kept.len());
                    kept.push(Some(event));
                }
            }
        }
        for event in kept.into_iter().flatten() {
            if let Some(id) = id_of(&event) {
                self.seen
                    .insert(id.to_owned(), xact_of(&event).unwrap_or_default());
            }
            self.page.push_back(event);
        }
    }

    /// The rows of the current page not handed out yet.
    pub(crate) fn buffered(&self) -> impl Iterator<Item = &Event> {
        self.page.iter()
    }

    /// The next row, fetching a page when needed.
    pub(crate) async fn next(&mut self) -> Option<Result<Event, RestError>> {
        match self.fill().await {
            Ok(true) => self.page.pop_front().map(Ok),
            Ok(false) => None,
            Err(e) => {
                // Stop after an error: the stream ends with it.
                self.cursor = None;
                self.started = true;
                self.page.clear();
                Some(Err(e))
            }
        }
    }

    /// The rows as a stream.
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<Event, RestError>> + Send {
        stream::unfold(self, |mut fetcher| async move {
            let item = fetcher.next().await?;
            Some((item, fetcher))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::sink::fake_server::FakeServer;
    use std::sync::Arc;

    /// An object of `total` rows served `page` at a time, latest first, each page also
    /// repeating the previous page's rows in an older version.
    fn serve(server: &FakeServer, total: u64, page: u64) {
        server.set_extension(Arc::new(move |request| {
            let offset: u64 = request
                .body?
                .get("cursor")
                .and_then(Value::as_str)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let row = |n: u64, xact: u64| json!({"id": format!("r{n}"), "_xact_id": format!("{xact:019}"), "input": n});
            let mut events: Vec<Value> = (offset..(offset + page).min(total))
                .map(|n| row(n, 2 * total - n))
                .collect();
            if events.is_empty() {
                return Some((200, json!({"events": []})));
            }
            events.extend((offset.saturating_sub(page)..offset).map(|n| row(n, total - n)));
            Some((200, json!({"events": events, "cursor": (offset + page).to_string()})))
        }));
    }

    #[tokio::test]
    async fn a_large_object_is_read_a_page_at_a_time_each_row_once() {
        let server = FakeServer::start();
        let (total, page) = (10_000u64, 1_000u64);
        serve(&server, total, page);
        let config = crate::BraintrustLayer::builder()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_api_key(server.api_key())
            .with_app_url(server.url())
            .config()
            .expect("config");
        let (_, _, http) = config.upload_sink().expect("client");
        let mut fetcher = Fetcher::new(Api::new(http), "v1/dataset/d/fetch".into(), 1000, None);
        let mut next_input = 0;
        let mut most_held = 0;
        while let Some(row) = fetcher.next().await {
            let row = row.expect("row");
            // Every row once, in its latest version, in order.
            assert_eq!(row.get("input"), Some(&json!(next_input)));
            assert_eq!(
                xact_of(&row),
                Some(format!("{:019}", 2 * total - next_input))
            );
            next_input += 1;
            most_held = most_held.max(fetcher.page.len());
        }
        assert_eq!(next_input, total);
        // Never more than one page of rows held.
        assert!(most_held < page as usize, "{most_held}");
        assert_eq!(server.requests_to("/v1/dataset/d/fetch").len(), 11);
    }

    #[test]
    fn xact_ids_order_as_numbers() {
        assert_eq!(
            xact_cmp("1000196000000000002", "1000196000000000010"),
            Ordering::Less
        );
        assert_eq!(xact_cmp("99", "100"), Ordering::Less);
        assert_eq!(xact_cmp("7", "7"), Ordering::Equal);
    }
}
