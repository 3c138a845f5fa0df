//! Continuing traces across processes: parent strings, `BRAINTRUST_PARENT`, and W3C headers.
//!
//! The encodings live in [`crate::parent`]; this module turns them into the parent a span
//! continues, and back.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::Error;
use crate::ids::{SpanId, TraceId};
use crate::layer::RemoteParent;
use crate::parent::{
    ObjectType, ParentTarget, SpanComponents, TraceParent, baggage_parent, inject_baggage,
};
use crate::record::{Route, RouteTarget, W3cContext};

/// Parses any parent a process can be handed: an exported span string (V1–V4), a W3C
/// `traceparent` value, or `project_id:…`, `project_name:…`, `experiment_id:…`.
pub(crate) fn parse_parent(s: &str) -> Result<RemoteParent, Error> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Error::InvalidParent("empty parent".into()));
    }
    if s.starts_with("00-") && s.len() == 55 {
        let tp = TraceParent::parse(s).map_err(|e| Error::InvalidParent(e.to_string()))?;
        return Ok(from_trace_parent(&tp, None, None));
    }
    if let Ok(target) = ParentTarget::parse(s) {
        return Ok(RemoteParent {
            root: None,
            span_id: None,
            route: Some(Arc::new(Route {
                target: Some(route_target(target)),
                propagated_event: None,
                w3c: None,
            })),
            sampled: None,
        });
    }
    let c = SpanComponents::parse(s).map_err(|e| Error::InvalidParent(e.to_string()))?;
    from_components(c)
}

/// The parent named by W3C headers: `traceparent` for the ids, `baggage`'s
/// `braintrust.parent` member for where rows go. `Ok(None)` when there is no
/// `traceparent`, as Python's `extract_trace_context` (a `braintrust.parent` alone names
/// no span to continue).
pub(crate) fn parent_from_headers<H: Headers + ?Sized>(
    headers: &H,
) -> Result<Option<RemoteParent>, Error> {
    let Some(tp) = headers.header("traceparent") else {
        return Ok(None);
    };
    let tp = TraceParent::parse(tp.trim()).map_err(|e| Error::InvalidParent(e.to_string()))?;
    let target = match headers.header("baggage").and_then(baggage_parent) {
        Some(p) => Some(
            ParentTarget::parse(p.trim())
                .map(route_target)
                .map_err(|e| Error::InvalidParent(e.to_string()))?,
        ),
        None => None,
    };
    let trace_state = headers.header("tracestate").and_then(usable_trace_state);
    Ok(Some(from_trace_parent(&tp, target, trace_state)))
}

/// A `tracestate` value worth passing on: at most 512 bytes of visible ASCII (W3C's limit
/// and character set), spaces and tabs aside; anything else is dropped.
fn usable_trace_state(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()
        && value.len() <= 512
        && value
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic()))
    .then(|| value.to_owned())
}

fn from_trace_parent(
    tp: &TraceParent,
    target: Option<RouteTarget>,
    trace_state: Option<String>,
) -> RemoteParent {
    RemoteParent {
        root: Some(TraceId::from_wire(&tp.trace_id)),
        span_id: Some(SpanId::from_wire(&tp.span_id)),
        route: Some(Arc::new(Route {
            target,
            propagated_event: None,
            w3c: Some(W3cContext {
                flags: tp.flags,
                trace_state,
            }),
        })),
        sampled: Some(tp.sampled()),
    }
}

fn route_target(t: ParentTarget) -> RouteTarget {
    match t {
        ParentTarget::ProjectId(id) => RouteTarget::ProjectId(id),
        ParentTarget::ProjectName(n) => RouteTarget::ProjectName(n),
        ParentTarget::ExperimentId(id) => RouteTarget::ExperimentId(id),
    }
}

fn from_components(c: SpanComponents) -> Result<RemoteParent, Error> {
    let target = if c.object_type == ObjectType::PlaygroundLogs {
        // Rows go to the playground session: its id must be given (there is no name to
        // resolve it by).
        match c.object_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => Some(RouteTarget::PlaygroundLogs(id.to_owned())),
            None => {
                return Err(Error::InvalidParent(
                    "a playground logs parent needs the prompt session id (object_id)".into(),
                ));
            }
        }
    } else {
        ParentTarget::from_components(&c).map(route_target)
    };
    let propagated_event = c.propagated_event.clone().filter(|m| !m.is_empty());
    let route = (target.is_some() || propagated_event.is_some()).then(|| {
        Arc::new(Route {
            target,
            propagated_event,
            w3c: None,
        })
    });
    Ok(RemoteParent {
        root: c.root_span_id.as_deref().map(TraceId::from_wire),
        span_id: c.span_id.as_deref().map(SpanId::from_wire),
        route,
        sampled: None,
    })
}

/// What an exported span string needs to know about where rows go.
#[derive(Debug, Clone)]
pub(crate) struct ExportTarget<'a> {
    /// The layer's project name, for `compute_object_metadata_args`.
    pub(crate) project_name: &'a str,
    /// The layer's project id when known (configured or resolved after login).
    pub(crate) project_id: Option<String>,
}

/// The exported span string (V4, as the Python SDK writes it) of a span.
pub(crate) fn export(
    root: &TraceId,
    span_id: &SpanId,
    row_id: &str,
    route: Option<&Route>,
    target: &ExportTarget<'_>,
) -> String {
    let mut c = match route.and_then(|r| r.target.as_ref()) {
        Some(RouteTarget::ExperimentId(id)) => {
            let mut c = SpanComponents::new(ObjectType::Experiment);
            c.object_id = Some(id.clone());
            c
        }
        Some(RouteTarget::ProjectId(id)) => project_components(None, Some(id.clone())),
        Some(RouteTarget::ProjectName(name)) => project_components(Some(name), None),
        Some(RouteTarget::PlaygroundLogs(id)) => {
            let mut c = SpanComponents::new(ObjectType::PlaygroundLogs);
            c.object_id = Some(id.clone());
            c
        }
        None => project_components(Some(target.project_name), target.project_id.clone()),
    };
    c.row_id = Some(row_id.to_owned());
    c.span_id = Some(span_id.to_wire());
    c.root_span_id = Some(root.to_wire());
    c.propagated_event = route.and_then(|r| r.propagated_event.clone());
    // A trace continued from a legacy (UUID ids) parent is exported as V3, as the SDKs do
    // in legacy mode; everything else as V4.
    match root {
        TraceId::Str(s) if uuid::Uuid::try_parse(s).is_ok() => c.to_v3(),
        _ => c.to_v4(),
    }
}

fn project_components(name: Option<&str>, id: Option<String>) -> SpanComponents {
    let mut c = SpanComponents::new(ObjectType::ProjectLogs);
    match id {
        Some(id) => c.object_id = Some(id),
        None => {
            let mut args = Map::new();
            args.insert(
                "project_name".into(),
                Value::String(name.unwrap_or_default().to_owned()),
            );
            args.insert("project_id".into(), Value::Null);
            c.compute_object_metadata_args = Some(args);
        }
    }
    c
}

/// The `braintrust.parent` value (`project_id:…`, `project_name:…`, `experiment_id:…`) for
/// a span's rows.
pub(crate) fn parent_target_string(route: Option<&Route>, target: &ExportTarget<'_>) -> String {
    match route.and_then(|r| r.target.as_ref()) {
        Some(RouteTarget::ExperimentId(id)) => ParentTarget::ExperimentId(id.clone()),
        Some(RouteTarget::ProjectId(id)) => ParentTarget::ProjectId(id.clone()),
        Some(RouteTarget::ProjectName(n)) => ParentTarget::ProjectName(n.clone()),
        // `braintrust.parent` has no form for a playground session: the layer's project
        // is named, as for a span of no container.
        Some(RouteTarget::PlaygroundLogs(_)) | None => match &target.project_id {
            Some(id) => ParentTarget::ProjectId(id.clone()),
            None => ParentTarget::ProjectName(target.project_name.to_owned()),
        },
    }
    .to_parent_string()
}

/// Writes `traceparent` and `baggage` (with `braintrust.parent`) into `headers`, keeping
/// the other baggage members. `traceparent` is written only when the ids are W3C-shaped hex;
/// its sampled flag carries this process's sampling decision.
pub(crate) fn inject<H: Headers + ?Sized>(
    headers: &mut H,
    root: &TraceId,
    span_id: &SpanId,
    parent_string: &str,
    sampled: bool,
    w3c: Option<&W3cContext>,
) {
    // The flags the trace came with, but "sampled" says what this process decided.
    let flags = w3c.map_or(0, |c| c.flags & !1) | u8::from(sampled);
    if let Ok(tp) = TraceParent::new(&root.to_wire(), &span_id.to_wire(), flags) {
        headers.set_header("traceparent", tp.to_header());
        if let Some(state) = w3c.and_then(|c| c.trace_state.as_deref()) {
            headers.set_header("tracestate", state.to_owned());
        }
    }
    let baggage = inject_baggage(headers.header("baggage"), parent_string);
    headers.set_header("baggage", baggage);
}

/// A set of HTTP-style headers that trace context can be read from and written to.
///
/// Lookups are case-insensitive, as HTTP header names are; setting a header replaces any
/// existing one with the same name in any casing. Implemented for `HashMap<String, String>`,
/// `Vec<(String, String)>` and, with the `http` feature, `http::HeaderMap`.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use tracing_braintrust::Headers;
///
/// let mut headers: HashMap<String, String> = HashMap::new();
/// headers.set_header("Baggage", "a=1".into());
/// assert_eq!(headers.header("baggage"), Some("a=1"));
/// ```
pub trait Headers {
    /// The value of header `name` (any casing), if present.
    fn header(&self, name: &str) -> Option<&str>;
    /// Sets header `name`, replacing any existing header of that name in any casing.
    fn set_header(&mut self, name: &str, value: String);
}

impl<S: std::hash::BuildHasher> Headers for HashMap<String, String, S> {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str).or_else(|| {
            self.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
    }

    fn set_header(&mut self, name: &str, value: String) {
        self.retain(|k, _| !k.eq_ignore_ascii_case(name));
        self.insert(name.to_owned(), value);
    }
}

impl Headers for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_header(&mut self, name: &str, value: String) {
        self.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.push((name.to_owned(), value));
    }
}

#[cfg(feature = "http")]
impl Headers for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }

    fn set_header(&mut self, name: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "4e9eae161dc22b8143097685ccb33b98";
    const SPAN: &str = "f68bee90fed05cca";

    #[test]
    fn parses_every_kind_of_parent() {
        let p = parse_parent(&format!("00-{ROOT}-{SPAN}-01")).expect("traceparent");
        assert_eq!(p.root, Some(TraceId::from_wire(ROOT)));
        assert_eq!(p.span_id, Some(SpanId::from_wire(SPAN)));
        assert_eq!(p.sampled, Some(true));

        let p = parse_parent("project_name:my project").expect("project name");
        assert_eq!(p.root, None);
        assert_eq!(
            p.route.and_then(|r| r.target.clone()),
            Some(RouteTarget::ProjectName("my project".into()))
        );

        let p = parse_parent("experiment_id:e-1").expect("experiment");
        assert_eq!(
            p.route.and_then(|r| r.target.clone()),
            Some(RouteTarget::ExperimentId("e-1".into()))
        );

        for bad in ["", "   ", "not a parent", "00-zz", "project_x:1", "BAIC"] {
            assert!(parse_parent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn export_then_parse_round_trips() {
        let route = Route {
            target: None,
            propagated_event: None,
            w3c: None,
        };
        let target = ExportTarget {
            project_name: "rust-layer-fixtures",
            project_id: None,
        };
        let s = export(
            &TraceId::from_wire(ROOT),
            &SpanId::from_wire("235d20b848aaa636"),
            "ed7d0c6e-69db-46ed-b417-c166a50f0ccb",
            Some(&route),
            &target,
        );
        // The Python SDK's string for these components (protocol §15.2, scenario d).
        assert_eq!(
            s,
            "BAICAyNdILhIqqY2BE6erhYdwiuBQwl2hcyzO5h7ImNvbXB1dGVfb2JqZWN0X21ldGFkYXRhX2FyZ3MiOnsicHJvamVjdF9uYW1lIjoicnVzdC1sYXllci1maXh0dXJlcyIsInByb2plY3RfaWQiOm51bGx9LCJyb3dfaWQiOiJlZDdkMGM2ZS02OWRiLTQ2ZWQtYjQxNy1jMTY2YTUwZjBjY2IifQ=="
        );
        let p = parse_parent(&s).expect("parses");
        assert_eq!(p.root, Some(TraceId::from_wire(ROOT)));
        assert_eq!(p.span_id, Some(SpanId::from_wire("235d20b848aaa636")));
        assert_eq!(
            p.route.and_then(|r| r.target.clone()),
            Some(RouteTarget::ProjectName("rust-layer-fixtures".into()))
        );
    }

    #[test]
    fn headers_with_odd_casing_and_extra_baggage() {
        let mut h: Vec<(String, String)> = vec![
            ("TraceParent".into(), format!("00-{ROOT}-{SPAN}-01")),
            (
                "BAGGAGE".into(),
                "other=val%2Fue, braintrust.parent=project_id%3Ap-1;prop=x,last=1".into(),
            ),
        ];
        let p = parent_from_headers(&h).expect("valid").expect("present");
        assert_eq!(p.span_id, Some(SpanId::from_wire(SPAN)));
        assert_eq!(
            p.route.and_then(|r| r.target.clone()),
            Some(RouteTarget::ProjectId("p-1".into()))
        );

        inject(
            &mut h,
            &TraceId::from_wire(ROOT),
            &SpanId::from_wire("235d20b848aaa636"),
            "project_name:rust-layer-fixtures",
            true,
            None,
        );
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(
            h.header("traceparent"),
            Some(format!("00-{ROOT}-235d20b848aaa636-01").as_str())
        );
        assert_eq!(
            h.header("baggage"),
            Some("other=val%2Fue,last=1,braintrust.parent=project_name%3Arust-layer-fixtures")
        );

        let none: HashMap<String, String> = HashMap::new();
        assert!(parent_from_headers(&none).expect("valid").is_none());
        let mut bad = HashMap::new();
        bad.insert("traceparent".to_owned(), "00-abc".to_owned());
        assert!(parent_from_headers(&bad).is_err());
    }
}
