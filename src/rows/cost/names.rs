//! Model-name resolution: every name a model may be listed under, from routing prefixes
//! (`openai/`, Vertex resource paths, Bedrock profiles and ARNs), version suffixes (`@...`,
//! `-latest`, dates) and first-party listings, most specific first.

/// Prefixes under which gateways and cloud platforms list a first-party model. A bare model
/// name that is not listed on its own is also looked up under these, e.g. `claude-3-5-sonnet`
/// under `publishers/anthropic/models/` (Vertex AI lists it at Anthropic's price).
const FIRST_PARTY_LISTINGS: [&str; 5] = [
    "publishers/anthropic/models/",
    "publishers/google/models/",
    "anthropic/",
    "google/",
    "openai/",
];

/// Routing prefixes that clients put in front of a model name (LiteLLM, OpenRouter, Azure
/// deployments via LiteLLM, ...). Only vendors whose models carry the same price everywhere
/// are listed: open-weight hosts price the same model differently, so their prefixes stay.
const ROUTING_PREFIXES: [&str; 10] = [
    "openai/",
    "anthropic/",
    "google/",
    "gemini/",
    "vertex_ai/",
    "vertex/",
    "bedrock/",
    "azure/",
    "azure_ai/",
    "openrouter/",
];

/// AWS Bedrock cross-region inference profile prefixes (`us.anthropic.claude-...`).
const BEDROCK_GEOS: [&str; 9] = [
    "global", "us", "us-gov", "eu", "apac", "ap", "au", "jp", "ca",
];

/// Every lowercase name `model` may be listed under, most specific first (see
/// [`super::PriceTable::lookup`]). Each step only removes a well-defined prefix or suffix.
pub(super) fn candidate_names(model: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let base = model.trim().to_ascii_lowercase();
    if base.is_empty() {
        return out;
    }
    let mut routed = vec![base.clone()];
    let mut current = base.as_str();
    while let Some(next) = strip_routing_prefix(current) {
        routed.push(next.to_owned());
        current = next;
    }
    for name in &routed {
        let mut current = name.as_str();
        push_unique(&mut out, current);
        while let Some(next) = strip_version_suffix(current) {
            push_unique(&mut out, next);
            current = next;
        }
    }
    let bare: Vec<String> = out.iter().filter(|n| !n.contains('/')).cloned().collect();
    for name in bare {
        for listing in FIRST_PARTY_LISTINGS {
            push_unique(&mut out, &format!("{listing}{name}"));
        }
    }
    out
}

fn push_unique(out: &mut Vec<String>, name: &str) {
    if !name.is_empty() && !out.iter().any(|n| n == name) {
        out.push(name.to_owned());
    }
}

/// Removes one routing prefix, returning a strictly shorter non-empty name.
fn strip_routing_prefix(name: &str) -> Option<&str> {
    if name.starts_with("arn:") {
        // arn:aws:bedrock:<region>:<account>:(foundation-model|inference-profile)/<id>
        return name
            .rsplit_once('/')
            .map(|(_, id)| id)
            .filter(|id| !id.is_empty());
    }
    let parts: Vec<&str> = name.splitn(5, '/').collect();
    if let ["projects", _, "locations", _, rest] = parts.as_slice() {
        return Some(*rest).filter(|r| !r.is_empty());
    }
    if let ["publishers", _, "models", ..] = parts.as_slice() {
        let rest = name.splitn(4, '/').nth(3)?;
        return Some(rest).filter(|r| !r.is_empty());
    }
    if let Some(rest) = name.strip_prefix("models/") {
        return Some(rest).filter(|r| !r.is_empty());
    }
    for prefix in ROUTING_PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            return Some(rest).filter(|r| !r.is_empty());
        }
    }
    if let Some((geo, rest)) = name.split_once('.') {
        if BEDROCK_GEOS.contains(&geo) && rest.contains('.') {
            return Some(rest);
        }
    }
    // Bedrock's own id for an Anthropic model: anthropic.<model>-v<n>[:<m>]
    if let Some(rest) = name.strip_prefix("anthropic.") {
        let rest = strip_bedrock_version(rest).unwrap_or(rest);
        return Some(rest).filter(|r| !r.is_empty());
    }
    None
}

/// `claude-3-5-sonnet-20241022-v2:0` -> `claude-3-5-sonnet-20241022`.
fn strip_bedrock_version(name: &str) -> Option<&str> {
    let (head, version) = name.rsplit_once("-v")?;
    let (major, minor) = version.split_once(':').unwrap_or((version, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor) && !head.is_empty()).then_some(head)
}

/// Removes one version suffix, returning a strictly shorter non-empty name.
fn strip_version_suffix(name: &str) -> Option<&str> {
    if let Some((head, _)) = name.rsplit_once('@') {
        return Some(head).filter(|h| !h.is_empty());
    }
    if let Some(head) = name.strip_suffix("-latest") {
        return Some(head).filter(|h| !h.is_empty());
    }
    strip_date_suffix(name)
}

/// Removes a trailing `-YYYY-MM-DD` or `-YYYYMMDD` holding a plausible 20xx date.
fn strip_date_suffix(name: &str) -> Option<&str> {
    let (head, last) = name.rsplit_once('-')?;
    let (head, year, month, day) = if last.len() == 2 {
        let (rest, month) = head.rsplit_once('-')?;
        let (rest, year) = rest.rsplit_once('-')?;
        (rest, year, month, last)
    } else if last.len() == 8 && last.is_ascii() {
        (head, &last[..4], &last[4..6], &last[6..])
    } else {
        return None;
    };
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| {
            s.bytes()
                .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'))
        })
    };
    let year = number(year, 4)?;
    let month = number(month, 2)?;
    let day = number(day, 2)?;
    let plausible =
        (2000..2100).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day);
    (plausible && !head.is_empty()).then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::cost::tests::{assert_cost, price_of, usage};
    use crate::rows::cost::{PriceTable, estimate_cost};

    #[test]
    fn claude_sonnet_4_dated_direct_name_uses_the_vertex_listing() {
        // claude-sonnet-4-20250514 is not listed bare; the date is stripped and the same model
        // is found as publishers/anthropic/models/claude-sonnet-4 (3 / 15).
        // 10000 * 3 + 1000 * 15 = 45000 -> $0.045
        let cost = estimate_cost(
            PriceTable::builtin(),
            "claude-sonnet-4-20250514",
            &usage(10_000.0, 0.0, 1000.0),
        );
        assert_cost(cost, 0.045);
    }

    #[test]
    fn dated_names_resolve_only_when_not_listed() {
        // gpt-4o-2024-05-13 is listed at 5 / 15: it must not take gpt-4o's 2.5 / 10.
        assert_eq!(price_of("gpt-4o-2024-05-13").input_per_mtok, 5.0);
        assert_eq!(price_of("gpt-4o-2099-01-01"), price_of("gpt-4o"));
        assert_eq!(price_of("gpt-4o-mini-2030-12-31"), price_of("gpt-4o-mini"));
        assert_eq!(price_of("gpt-4o-mini-2030-12-31").input_per_mtok, 0.15);
        assert_eq!(
            price_of("claude-sonnet-4-5-20991231"),
            price_of("claude-sonnet-4-5")
        );
        assert_eq!(
            price_of("gemini-1.5-pro-latest"),
            price_of("gemini-1.5-pro")
        );
    }

    #[test]
    fn provider_prefixed_names_resolve() {
        let gpt_4o = price_of("gpt-4o");
        for name in [
            "openai/gpt-4o",
            "GPT-4o",
            "  azure/gpt-4o ",
            "openrouter/openai/gpt-4o",
        ] {
            assert_eq!(price_of(name), gpt_4o, "{name}");
        }
        // Bedrock: listed ids keep their own price; others reach the listed id or the model.
        let bedrock = price_of("anthropic.claude-3-5-sonnet-20241022-v2:0");
        assert_eq!(
            (bedrock.input_per_mtok, bedrock.output_per_mtok),
            (6.0, 30.0)
        );
        assert_eq!(
            price_of("eu.anthropic.claude-3-5-sonnet-20241022-v2:0"),
            bedrock
        );
        assert_eq!(
            price_of("us.anthropic.claude-sonnet-4-5-20250929-v1:0").input_per_mtok,
            3.3
        );
        assert_eq!(
            price_of("anthropic.claude-opus-4-5-20251101-v9:0"),
            price_of("claude-opus-4-5")
        );
        assert_eq!(
            price_of(
                "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
            ),
            price_of("us.anthropic.claude-sonnet-4-5-20250929-v1:0")
        );
        // Vertex: @version suffixes, full resource names, bare names via the publisher listing.
        let vertex = price_of("publishers/anthropic/models/claude-3-5-sonnet");
        assert_eq!((vertex.input_per_mtok, vertex.output_per_mtok), (3.0, 15.0));
        assert_eq!(price_of("claude-3-5-sonnet@20240620"), vertex);
        assert_eq!(price_of("claude-3-5-sonnet-20240620"), vertex);
        assert_eq!(
            price_of(
                "projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514"
            ),
            price_of("publishers/anthropic/models/claude-sonnet-4")
        );
        // An unpriced Vertex entry reaches the model's own listing.
        assert_eq!(
            price_of("publishers/google/models/gemini-1.5-pro"),
            price_of("gemini-1.5-pro")
        );
    }

    #[test]
    fn unknown_models_have_no_price() {
        let table = PriceTable::builtin();
        for name in [
            "",
            "   ",
            "gpt-4o-mini-foo",
            "gpt-4o-minix",
            "my-fine-tune",
            "gpt-4o-2024-13-01",
            "openrouter/auto",
            "gpt-image-1",
            "anthropic.",
            "models/",
            "@",
        ] {
            assert!(table.lookup(name).is_none(), "{name:?} must be unknown");
        }
        assert_eq!(
            estimate_cost(table, "no-such-model", &usage(1.0, 0.0, 1.0)),
            None
        );
    }

    #[test]
    fn candidate_names_are_bounded_and_specific_first() {
        let names = candidate_names("OpenAI/GPT-4o-2024-08-06");
        assert_eq!(
            &names[..4],
            [
                "openai/gpt-4o-2024-08-06",
                "openai/gpt-4o",
                "gpt-4o-2024-08-06",
                "gpt-4o"
            ]
        );
        assert!(candidate_names(&"models/".repeat(1000)).len() < 2000);
        assert_eq!(strip_date_suffix("x-20-2408-06"), None);
        assert_eq!(strip_date_suffix("x-2024-08-06"), Some("x"));
        assert_eq!(strip_date_suffix("x-20241301"), None);
        assert_eq!(strip_date_suffix("x-é2024080"), None);
    }
}
