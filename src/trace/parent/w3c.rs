//! W3C trace propagation: the `traceparent` header, the `braintrust.parent` member of
//! `baggage`, and the parent targets (`project_id:...`, `project_name:...`,
//! `experiment_id:...`) those members and `x-bt-parent` carry.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
#[cfg(test)]
use serde_json::{Map, Value};

use super::{Field, ObjectType, ParentError, SpanComponents, hex_value};

/// The `row_id` Python puts in the parent it synthesises from W3C headers.
#[cfg(test)]
pub(crate) const PROPAGATION_ROW_ID: &str = "bt-propagation";

/// The baggage member key carrying the Braintrust parent.
pub(crate) const BAGGAGE_PARENT_KEY: &str = "braintrust.parent";

/// Most members [`inject_baggage`] emits, `braintrust.parent` included.
pub(crate) const BAGGAGE_MAX_MEMBERS: usize = 64;

/// Most bytes [`inject_baggage`] emits, separators included.
pub(crate) const BAGGAGE_MAX_BYTES: usize = 8192;

/// What Python's `urllib.parse.quote(value, safe="")` leaves alone: letters, digits, `-._~`.
const BAGGAGE_VALUE_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl SpanComponents {
    /// The parent Python builds from an extracted `traceparent` plus the container named by
    /// `braintrust.parent` (or by the current logger): `row_id` is [`PROPAGATION_ROW_ID`], the
    /// span id is the traceparent's parent id and the root span id its trace id.
    #[cfg(test)]
    pub(crate) fn from_trace_parent(trace_parent: &TraceParent, target: &ParentTarget) -> Self {
        let mut components = match target {
            ParentTarget::ProjectId(id) => {
                let mut c = Self::new(ObjectType::ProjectLogs);
                c.object_id = Some(id.clone());
                c
            }
            ParentTarget::ExperimentId(id) => {
                let mut c = Self::new(ObjectType::Experiment);
                c.object_id = Some(id.clone());
                c
            }
            ParentTarget::ProjectName(name) => {
                let mut c = Self::new(ObjectType::ProjectLogs);
                let mut args = Map::new();
                args.insert("project_name".to_owned(), Value::String(name.clone()));
                c.compute_object_metadata_args = Some(args);
                c
            }
        };
        components.row_id = Some(PROPAGATION_ROW_ID.to_owned());
        components.span_id = Some(trace_parent.span_id.clone());
        components.root_span_id = Some(trace_parent.trace_id.clone());
        components
    }
}

/// The container a `braintrust.parent` baggage member or `x-bt-parent` header names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ParentTarget {
    /// `project_id:<id>`: a project's logs, by id.
    ProjectId(String),
    /// `project_name:<name>`: a project's logs, by name (resolved by the receiver).
    ProjectName(String),
    /// `experiment_id:<id>`: an experiment.
    ExperimentId(String),
}

impl ParentTarget {
    /// Parses `project_id:<id>`, `project_name:<name>` or `experiment_id:<id>`. Only the first
    /// `:` separates, so names may contain colons.
    ///
    /// # Errors
    ///
    /// [`ParentError::InvalidParentTarget`] for another prefix or an empty value.
    pub(crate) fn parse(s: &str) -> Result<Self, ParentError> {
        let target = if let Some(id) = s.strip_prefix("project_id:") {
            Self::ProjectId(id.to_owned())
        } else if let Some(name) = s.strip_prefix("project_name:") {
            Self::ProjectName(name.to_owned())
        } else if let Some(id) = s.strip_prefix("experiment_id:") {
            Self::ExperimentId(id.to_owned())
        } else {
            return Err(ParentError::InvalidParentTarget(s.to_owned()));
        };
        match &target {
            Self::ProjectId(v) | Self::ProjectName(v) | Self::ExperimentId(v) if v.is_empty() => {
                Err(ParentError::InvalidParentTarget(s.to_owned()))
            }
            _ => Ok(target),
        }
    }

    /// The `prefix:value` form.
    pub(crate) fn to_parent_string(&self) -> String {
        match self {
            Self::ProjectId(id) => format!("project_id:{id}"),
            Self::ProjectName(name) => format!("project_name:{name}"),
            Self::ExperimentId(id) => format!("experiment_id:{id}"),
        }
    }

    /// The parent string a span under `components` advertises: the resolved id when known,
    /// else the project id or name from `compute_object_metadata_args`. `None` for
    /// playground logs and for containers that name neither.
    pub(crate) fn from_components(components: &SpanComponents) -> Option<Self> {
        match (components.object_type, components.id(Field::Object)) {
            (ObjectType::ProjectLogs, Some(id)) => Some(Self::ProjectId(id.to_owned())),
            (ObjectType::Experiment, Some(id)) => Some(Self::ExperimentId(id.to_owned())),
            (ObjectType::ProjectLogs, None) => {
                // As Python's `_compute_logger_metadata`: the project id when given (a
                // logger made with `project_id=` exports it with a null name), else the
                // name.
                let args = components.compute_object_metadata_args.as_ref()?;
                let text = |key: &str| {
                    args.get(key)
                        .and_then(|v| v.as_str())
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                };
                text("project_id")
                    .map(Self::ProjectId)
                    .or_else(|| text("project_name").map(Self::ProjectName))
            }
            _ => None,
        }
    }
}

/// A W3C `traceparent` header: Braintrust's `root_span_id` is the trace id and the span's
/// `span_id` the parent id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub(crate) trace_id: String,
    /// 16 lowercase hex digits, not all zero.
    pub(crate) span_id: String,
    /// The trace flags (bit 0: sampled).
    pub(crate) flags: u8,
}

impl TraceParent {
    /// Builds a traceparent from span ids, checking them as [`TraceParent::parse`] would.
    ///
    /// # Errors
    ///
    /// [`ParentError::InvalidTraceParent`] when an id is not lowercase hex of the right length
    /// or is all zeros (legacy UUID ids never qualify, so injection is then skipped).
    pub(crate) fn new(trace_id: &str, span_id: &str, flags: u8) -> Result<Self, ParentError> {
        check_w3c_id(trace_id.as_bytes(), 32, "trace id")?;
        check_w3c_id(span_id.as_bytes(), 16, "parent id")?;
        Ok(Self {
            trace_id: trace_id.to_owned(),
            span_id: span_id.to_owned(),
            flags,
        })
    }

    /// Parses a header value that must match Python's
    /// `^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$` (so uppercase hex and other versions are
    /// rejected) with non-zero ids. Surrounding whitespace is not trimmed; unlike Python's
    /// `$`, a trailing newline is rejected too.
    ///
    /// # Errors
    ///
    /// [`ParentError::InvalidTraceParent`] saying which part is wrong.
    pub(crate) fn parse(s: &str) -> Result<Self, ParentError> {
        let b = s.as_bytes();
        if b.len() != 55 {
            return Err(ParentError::InvalidTraceParent(format!(
                "expected 55 characters, found {}",
                b.len()
            )));
        }
        if !b.starts_with(b"00-") {
            return Err(ParentError::InvalidTraceParent(
                "version must be 00".to_owned(),
            ));
        }
        if b[35] != b'-' || b[52] != b'-' {
            return Err(ParentError::InvalidTraceParent(
                "fields must be separated by '-'".to_owned(),
            ));
        }
        let (trace_id, span_id, flags) = (&b[3..35], &b[36..52], &b[53..55]);
        check_w3c_id(trace_id, 32, "trace id")?;
        check_w3c_id(span_id, 16, "parent id")?;
        if !flags.iter().all(|c| is_lower_hex(*c)) {
            return Err(ParentError::InvalidTraceParent(
                "flags must be 2 lowercase hex digits".to_owned(),
            ));
        }
        let flags = (hex_value(flags[0]) << 4) | hex_value(flags[1]);
        Ok(Self {
            trace_id: String::from_utf8_lossy(trace_id).into_owned(),
            span_id: String::from_utf8_lossy(span_id).into_owned(),
            flags,
        })
    }

    /// The header value, `00-<trace_id>-<span_id>-<flags as 2 hex digits>`.
    pub(crate) fn to_header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// Whether the sampled flag (bit 0) is set.
    pub(crate) fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

fn check_w3c_id(id: &[u8], len: usize, what: &str) -> Result<(), ParentError> {
    if id.len() != len || !id.iter().all(|c| is_lower_hex(*c)) {
        return Err(ParentError::InvalidTraceParent(format!(
            "{what} must be {len} lowercase hex digits"
        )));
    }
    if id.iter().all(|c| *c == b'0') {
        return Err(ParentError::InvalidTraceParent(format!(
            "{what} must not be all zeros"
        )));
    }
    Ok(())
}

fn is_lower_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

/// Builds a `baggage` value carrying `braintrust.parent=<parent>`.
///
/// Members of `existing` are relayed byte for byte (only the whitespace around each member is
/// dropped) and in order, except earlier `braintrust.parent` members, which are replaced. The
/// new member goes last, as the Python SDK writes it (`other=val%2Fue,braintrust.parent=...`),
/// and its value is percent-encoded like `urllib.parse.quote(parent, safe="")`: everything
/// but letters, digits and `-._~` (`:` is `%3A`, space `%20`, never `+`).
///
/// The result stays within [`BAGGAGE_MAX_MEMBERS`] members and [`BAGGAGE_MAX_BYTES`] bytes by
/// dropping whole members: `braintrust.parent` is reserved first, then existing members are
/// kept in order while they fit (a member too large is skipped, later ones may still fit).
/// Drops are reported once a minute on stderr.
pub(crate) fn inject_baggage(existing: Option<&str>, parent: &str) -> String {
    let own = format!(
        "{BAGGAGE_PARENT_KEY}={}",
        utf8_percent_encode(parent, BAGGAGE_VALUE_ESCAPES)
    );
    let own_fits = own.len() <= BAGGAGE_MAX_BYTES;
    let (mut members, mut bytes) = if own_fits { (1, own.len()) } else { (0, 0) };
    let mut kept: Vec<&str> = Vec::new();
    let mut dropped = 0usize;
    for member in existing.unwrap_or("").split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() || baggage_member_key(member) == BAGGAGE_PARENT_KEY {
            continue;
        }
        let cost = member.len() + usize::from(members > 0);
        if members >= BAGGAGE_MAX_MEMBERS || bytes + cost > BAGGAGE_MAX_BYTES {
            dropped += 1;
            continue;
        }
        kept.push(member);
        members += 1;
        bytes += cost;
    }
    if !own_fits {
        crate::diag::warn(
            "baggage-parent-too-long",
            format_args!(
                "braintrust.parent is longer than {BAGGAGE_MAX_BYTES} bytes once encoded; \
                 not propagated"
            ),
        );
    }
    if dropped > 0 {
        crate::diag::warn(
            "baggage-members-dropped",
            format_args!(
                "dropped {dropped} baggage member(s) to stay within {BAGGAGE_MAX_MEMBERS} \
                 members and {BAGGAGE_MAX_BYTES} bytes"
            ),
        );
    }
    let mut out = kept.join(",");
    if own_fits {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&own);
    }
    out
}

/// The percent-decoded `braintrust.parent` value of a `baggage` header value, or `None` when
/// no member has that key.
///
/// Members are separated by `,`; whitespace around keys and values and `;` properties are
/// ignored. Keys are case-sensitive. Invalid `%` sequences are kept as they are and invalid
/// UTF-8 becomes U+FFFD (as Python's `unquote`); `+` stays `+`. If the key appears more than
/// once, the last one wins, as when the members are collected into a dict.
pub(crate) fn baggage_parent(baggage: &str) -> Option<String> {
    let mut found = None;
    for member in baggage.split(',') {
        let pair = member.split(';').next().unwrap_or("");
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        if key.trim_matches([' ', '\t']) == BAGGAGE_PARENT_KEY {
            let value = value.trim_matches([' ', '\t']);
            found = Some(percent_decode_str(value).decode_utf8_lossy().into_owned());
        }
    }
    found
}

/// The key of a baggage member: the text before `=` (or `;`), without surrounding whitespace.
fn baggage_member_key(member: &str) -> &str {
    let end = member.find(['=', ';']).unwrap_or(member.len());
    member[..end].trim_matches([' ', '\t'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing_follows_the_python_regex() {
        let valid = "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01";
        let tp = TraceParent::parse(valid).unwrap();
        assert_eq!(tp.trace_id, "4e9eae161dc22b8143097685ccb33b98");
        assert_eq!(tp.span_id, "f68bee90fed05cca");
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_header(), valid);
        let unsampled = TraceParent::parse(&valid.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
        assert_eq!(
            TraceParent::parse(&valid.replace("-01", "-ff"))
                .unwrap()
                .flags,
            0xff
        );
        for bad in [
            "",
            "00-4E9EAE161DC22B8143097685CCB33B98-f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b98-F68BEE90FED05CCA-01",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-0A",
            "00-00000000000000000000000000000000-f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b98-0000000000000000-01",
            "01-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01",
            "ff-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b9-f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cc-01",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01-",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-1",
            "00-4e9eae161dc22b8143097685ccb33b98_f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b9g-f68bee90fed05cca-01",
            " 00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01\n",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cc\u{e9}1",
        ] {
            let result = TraceParent::parse(bad);
            assert!(
                matches!(result, Err(ParentError::InvalidTraceParent(_))),
                "{bad:?}"
            );
        }
        assert!(
            TraceParent::new("4e9eae161dc22b8143097685ccb33b98", "F68BEE90FED05CCA", 1).is_err()
        );
        assert_eq!(
            TraceParent::new("4e9eae161dc22b8143097685ccb33b98", "f68bee90fed05cca", 0)
                .unwrap()
                .to_header(),
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-00"
        );
    }

    #[test]
    fn inject_baggage_relays_members_and_replaces_the_parent() {
        assert_eq!(
            inject_baggage(None, "project_id:abc"),
            "braintrust.parent=project_id%3Aabc"
        );
        assert_eq!(
            inject_baggage(Some(""), "project_id:abc"),
            "braintrust.parent=project_id%3Aabc"
        );
        assert_eq!(
            inject_baggage(
                Some(
                    " a=1 , braintrust.parent=project_name%3Aold,b=x%2Cy;prop=1;flag ,,braintrust.parent ;p"
                ),
                "project_name:my proj/é+~._-"
            ),
            "a=1,b=x%2Cy;prop=1;flag,braintrust.parent=project_name%3Amy%20proj%2F%C3%A9%2B~._-"
        );
        // The key match is exact: similar keys are other members.
        assert_eq!(
            inject_baggage(Some("Braintrust.Parent=x,braintrust.parents=y"), "p"),
            "Braintrust.Parent=x,braintrust.parents=y,braintrust.parent=p"
        );
    }

    #[test]
    fn inject_baggage_respects_member_and_byte_limits() {
        let many: Vec<String> = (0..100).map(|i| format!("k{i}=v{i}")).collect();
        let out = inject_baggage(Some(&many.join(",")), "project_id:abc");
        let members: Vec<&str> = out.split(',').collect();
        assert_eq!(members.len(), BAGGAGE_MAX_MEMBERS);
        assert_eq!(members[0], "k0=v0");
        assert_eq!(members[62], "k62=v62");
        assert_eq!(members[63], "braintrust.parent=project_id%3Aabc");

        let big = format!("big={}", "x".repeat(3000));
        let existing = format!("{big},{big},{big},small=1");
        let out = inject_baggage(Some(&existing), "project_id:abc");
        assert!(out.len() <= BAGGAGE_MAX_BYTES);
        assert_eq!(
            out,
            format!("{big},{big},small=1,braintrust.parent=project_id%3Aabc")
        );

        let exact = format!(
            "e={}",
            "y".repeat(BAGGAGE_MAX_BYTES - 1 - "braintrust.parent=p".len() - 2)
        );
        let out = inject_baggage(Some(&exact), "p");
        assert_eq!(out.len(), BAGGAGE_MAX_BYTES);
        assert!(out.ends_with(",braintrust.parent=p"));

        // A parent that cannot fit on its own is not propagated; the rest is relayed.
        let out = inject_baggage(Some("a=1"), &"n".repeat(BAGGAGE_MAX_BYTES));
        assert_eq!(out, "a=1");
    }

    #[test]
    fn baggage_parent_extracts_and_decodes() {
        let captured = "other=val%2Fue,braintrust.parent=project_name%3Arust-layer-fixtures";
        assert_eq!(
            baggage_parent(captured).as_deref(),
            Some("project_name:rust-layer-fixtures")
        );
        assert_eq!(
            baggage_parent(
                " a=1 ,\tbraintrust.parent = project_name%3Amy%20proj+x%2F%C3%A9 ;meta=1;flag, c=3"
            )
            .as_deref(),
            Some("project_name:my proj+x/\u{e9}")
        );
        assert_eq!(
            baggage_parent("braintrust.parent=a,braintrust.parent=b").as_deref(),
            Some("b")
        );
        assert_eq!(
            baggage_parent("braintrust.parent=%zz%FF").as_deref(),
            Some("%zz\u{fffd}")
        );
        assert_eq!(baggage_parent("braintrust.parent=").as_deref(), Some(""));
        assert_eq!(baggage_parent("a=1,b=2"), None);
        assert_eq!(baggage_parent("braintrust.parent;x=1"), None);
        assert_eq!(baggage_parent("Braintrust.Parent=x"), None);
        assert_eq!(baggage_parent(""), None);
        let round = inject_baggage(Some("x=1"), "project_name:a b:c,d;e=f%");
        assert_eq!(
            baggage_parent(&round).as_deref(),
            Some("project_name:a b:c,d;e=f%")
        );
    }

    #[test]
    fn parent_targets_parse_and_print() {
        for (text, target) in [
            ("project_id:83fd", ParentTarget::ProjectId("83fd".into())),
            (
                "project_name:a:b c",
                ParentTarget::ProjectName("a:b c".into()),
            ),
            ("experiment_id:e1", ParentTarget::ExperimentId("e1".into())),
        ] {
            assert_eq!(ParentTarget::parse(text).unwrap(), target);
            assert_eq!(target.to_parent_string(), text);
        }
        for bad in [
            "",
            "project_id:",
            "project_name:",
            "experiment_id:",
            "project:x",
            "Project_id:x",
            "x",
        ] {
            assert!(
                matches!(
                    ParentTarget::parse(bad),
                    Err(ParentError::InvalidParentTarget(_))
                ),
                "{bad}"
            );
        }
        let tp =
            TraceParent::parse("00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01").unwrap();
        let experiment =
            SpanComponents::from_trace_parent(&tp, &ParentTarget::ExperimentId("e1".into()));
        assert_eq!(experiment.object_type, ObjectType::Experiment);
        assert_eq!(experiment.row_id.as_deref(), Some(PROPAGATION_ROW_ID));
        assert!(experiment.validate().is_ok());
        assert_eq!(
            SpanComponents::parse(&experiment.to_v4()).unwrap(),
            experiment
        );
        let mut playground = SpanComponents::new(ObjectType::PlaygroundLogs);
        playground.object_id = Some("s".into());
        assert_eq!(ParentTarget::from_components(&playground), None);
    }
}
