//! Cost estimation: per-million-token prices and the arithmetic that turns token counts into
//! US dollars.
//!
//! The built-in price list is `data/model_prices.json`, derived from the model list of
//! Braintrust's AI proxy (MIT licensed; see `data/README.md`). It is embedded in the binary and
//! parsed once, on first use, which only happens on the worker thread. Users can supply a file
//! in the same format; their entries win over the built-in ones.
//!
//! The arithmetic follows Braintrust's own estimated-cost semantics (braintrust-spec,
//! `references/features/token-and-cost-metrics.md`, "Cost computation semantics"), so a cost we
//! send as `metrics.estimated_cost` matches what the UI would compute from the same tokens.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use serde_json::{Map, Value};

/// The shipped price list (same format as Braintrust's proxy `model_list.json`).
const BUILTIN_JSON: &str = include_str!("../data/model_prices.json");

/// OpenRouter reports a price of `-1` per token for routers whose price depends on the model
/// they pick (`openrouter/auto`); the upstream list stores it as `-1 * 10^6` per million. It
/// means "price unknown", so such a field is read as absent rather than rejected.
const VARIABLE_PRICE_SENTINEL: f64 = -1_000_000.0;

/// How many `parent` links are followed for an entry that has no price of its own.
const MAX_PARENT_DEPTH: usize = 8;

const FIELD_INPUT: &str = "input_cost_per_mil_tokens";
const FIELD_OUTPUT: &str = "output_cost_per_mil_tokens";
const FIELD_CACHE_READ: &str = "input_cache_read_cost_per_mil_tokens";
const FIELD_CACHE_WRITE: &str = "input_cache_write_cost_per_mil_tokens";
const FIELD_CACHE_WRITE_5M: &str = "input_cache_write_5m_cost_per_mil_tokens";
const FIELD_CACHE_WRITE_1H: &str = "input_cache_write_1h_cost_per_mil_tokens";
const FIELD_PARENT: &str = "parent";

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

/// Why a price list or a price was rejected.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CostError {
    /// The text is not valid JSON; the message comes from the parser (with line and column).
    Json(String),
    /// The JSON is valid but not shaped like a price list (an object of model name to entry).
    Format(String),
    /// A price is not a finite, non-negative number.
    InvalidPrice {
        /// The model whose entry holds the price (empty for a price built in code).
        model: String,
        /// The JSON field name of the price.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

impl fmt::Display for CostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CostError::Json(msg) => write!(f, "model price list is not valid JSON: {msg}"),
            CostError::Format(msg) => write!(f, "malformed model price list: {msg}"),
            CostError::InvalidPrice {
                model,
                field,
                detail,
            } if model.is_empty() => write!(f, "invalid price {field}: {detail}"),
            CostError::InvalidPrice {
                model,
                field,
                detail,
            } => write!(f, "invalid price {field} for model {model:?}: {detail}"),
        }
    }
}

impl std::error::Error for CostError {}

/// Prices of one model in US dollars per million tokens. Always finite and non-negative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ModelPrice {
    input_per_mtok: f64,
    output_per_mtok: f64,
    cache_read_per_mtok: Option<f64>,
    cache_write_per_mtok: Option<f64>,
    cache_write_5m_per_mtok: Option<f64>,
    cache_write_1h_per_mtok: Option<f64>,
}

impl ModelPrice {
    /// A price with input and output rates and no special cache rates (cache reads and writes
    /// are then billed at the input rate).
    ///
    /// # Errors
    ///
    /// [`CostError::InvalidPrice`] when a rate is negative, NaN or infinite.
    pub(crate) fn new(input_per_mtok: f64, output_per_mtok: f64) -> Result<Self, CostError> {
        Ok(ModelPrice {
            input_per_mtok: check_price("", FIELD_INPUT, input_per_mtok)?,
            output_per_mtok: check_price("", FIELD_OUTPUT, output_per_mtok)?,
            cache_read_per_mtok: None,
            cache_write_per_mtok: None,
            cache_write_5m_per_mtok: None,
            cache_write_1h_per_mtok: None,
        })
    }

    /// Sets the rate for prompt tokens read from the provider's cache.
    ///
    /// # Errors
    ///
    /// [`CostError::InvalidPrice`] when the rate is negative, NaN or infinite.
    pub(crate) fn with_cache_read(mut self, per_mtok: f64) -> Result<Self, CostError> {
        self.cache_read_per_mtok = Some(check_price("", FIELD_CACHE_READ, per_mtok)?);
        Ok(self)
    }

    /// Sets the rate for prompt tokens written to the provider's cache (any TTL).
    ///
    /// # Errors
    ///
    /// [`CostError::InvalidPrice`] when the rate is negative, NaN or infinite.
    pub(crate) fn with_cache_write(mut self, per_mtok: f64) -> Result<Self, CostError> {
        self.cache_write_per_mtok = Some(check_price("", FIELD_CACHE_WRITE, per_mtok)?);
        Ok(self)
    }

    /// Sets Anthropic's per-TTL cache write rates (5 minutes and 1 hour).
    ///
    /// # Errors
    ///
    /// [`CostError::InvalidPrice`] when a rate is negative, NaN or infinite.
    #[cfg(test)]
    pub(crate) fn with_cache_write_ttl(
        mut self,
        five_minutes_per_mtok: f64,
        one_hour_per_mtok: f64,
    ) -> Result<Self, CostError> {
        self.cache_write_5m_per_mtok = Some(check_price(
            "",
            FIELD_CACHE_WRITE_5M,
            five_minutes_per_mtok,
        )?);
        self.cache_write_1h_per_mtok =
            Some(check_price("", FIELD_CACHE_WRITE_1H, one_hour_per_mtok)?);
        Ok(self)
    }

    /// The cost in US dollars of `usage` at these prices (Braintrust's formula):
    ///
    /// ```text
    /// creation = max(prompt_cache_creation, creation_5m + creation_1h)
    /// uncached = max(prompt - cached - creation, 0)
    /// cost = uncached * input + cached * cache_read + write_cost + completion * output
    /// ```
    ///
    /// `write_cost` uses the 5m/1h rates when the model has both and the split covers the
    /// aggregate, else `creation * cache_write`. Cache rates fall back to the input rate.
    /// Reasoning tokens are part of the completion tokens and are not billed again. Counts
    /// that are negative, NaN or infinite are treated as not reported; missing counts are 0.
    pub(crate) fn cost(&self, usage: &TokenUsage) -> f64 {
        let u = usage.sanitized();
        let prompt = u.prompt_tokens.unwrap_or(0.0);
        let cached = u.prompt_cached_tokens.unwrap_or(0.0);
        let aggregate = u.prompt_cache_creation_tokens.unwrap_or(0.0);
        let five_minutes = u.prompt_cache_creation_5m_tokens.unwrap_or(0.0);
        let one_hour = u.prompt_cache_creation_1h_tokens.unwrap_or(0.0);
        let split = five_minutes + one_hour;
        let creation = aggregate.max(split);
        let write_cost = match (self.cache_write_5m_per_mtok, self.cache_write_1h_per_mtok) {
            (Some(rate_5m), Some(rate_1h)) if split >= aggregate => {
                five_minutes * rate_5m + one_hour * rate_1h
            }
            _ => creation * self.cache_write_per_mtok.unwrap_or(self.input_per_mtok),
        };
        let uncached = (prompt - cached - creation).max(0.0);
        let read_rate = self.cache_read_per_mtok.unwrap_or(self.input_per_mtok);
        let completion = u.completion_tokens.unwrap_or(0.0);
        (uncached * self.input_per_mtok
            + cached * read_rate
            + write_cost
            + completion * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// Token counts under Braintrust's standard metric names (protocol §9.3). `prompt_tokens`
/// includes cached and cache-write tokens; `completion_tokens` includes reasoning tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TokenUsage {
    /// All prompt tokens, cached and cache-write ones included.
    pub(crate) prompt_tokens: Option<f64>,
    /// All completion tokens, reasoning ones included.
    pub(crate) completion_tokens: Option<f64>,
    /// Prompt tokens read from the provider's cache.
    pub(crate) prompt_cached_tokens: Option<f64>,
    /// Prompt tokens written to the provider's cache (aggregate over TTLs).
    pub(crate) prompt_cache_creation_tokens: Option<f64>,
    /// Prompt tokens written to a 5-minute cache entry (Anthropic).
    pub(crate) prompt_cache_creation_5m_tokens: Option<f64>,
    /// Prompt tokens written to a 1-hour cache entry (Anthropic).
    pub(crate) prompt_cache_creation_1h_tokens: Option<f64>,
    /// Reasoning tokens; informational, never billed on top of `completion_tokens`.
    pub(crate) completion_reasoning_tokens: Option<f64>,
}

impl TokenUsage {
    /// Collects the token counts among `metrics` (name, value) pairs, e.g. a span's metrics
    /// or the output of `usage::usage_metrics`. Unknown names are ignored; a later pair with
    /// the same name wins.
    pub(crate) fn from_metrics<'a>(metrics: impl IntoIterator<Item = (&'a str, f64)>) -> Self {
        let mut usage = TokenUsage::default();
        for (name, value) in metrics {
            let slot = match name {
                "prompt_tokens" => &mut usage.prompt_tokens,
                "completion_tokens" => &mut usage.completion_tokens,
                "prompt_cached_tokens" => &mut usage.prompt_cached_tokens,
                "prompt_cache_creation_tokens" => &mut usage.prompt_cache_creation_tokens,
                "prompt_cache_creation_5m_tokens" => &mut usage.prompt_cache_creation_5m_tokens,
                "prompt_cache_creation_1h_tokens" => &mut usage.prompt_cache_creation_1h_tokens,
                "completion_reasoning_tokens" => &mut usage.completion_reasoning_tokens,
                _ => continue,
            };
            *slot = Some(value);
        }
        usage
    }

    /// The same counts with negative, NaN and infinite values dropped (treated as not
    /// reported).
    fn sanitized(&self) -> TokenUsage {
        let keep = |v: Option<f64>| v.filter(|x| x.is_finite() && *x >= 0.0);
        TokenUsage {
            prompt_tokens: keep(self.prompt_tokens),
            completion_tokens: keep(self.completion_tokens),
            prompt_cached_tokens: keep(self.prompt_cached_tokens),
            prompt_cache_creation_tokens: keep(self.prompt_cache_creation_tokens),
            prompt_cache_creation_5m_tokens: keep(self.prompt_cache_creation_5m_tokens),
            prompt_cache_creation_1h_tokens: keep(self.prompt_cache_creation_1h_tokens),
            completion_reasoning_tokens: keep(self.completion_reasoning_tokens),
        }
    }

    /// Whether any count that carries a price is known (reasoning tokens alone are not).
    fn has_billable_counts(&self) -> bool {
        [
            self.prompt_tokens,
            self.completion_tokens,
            self.prompt_cached_tokens,
            self.prompt_cache_creation_tokens,
            self.prompt_cache_creation_5m_tokens,
            self.prompt_cache_creation_1h_tokens,
        ]
        .iter()
        .any(Option::is_some)
    }
}

/// Estimated cost in US dollars of one LLM call of `model` with `usage` (see
/// [`ModelPrice::cost`] for the formula). `None` when the model has no price in `table` or no
/// billable token count is known (negative, NaN and infinite counts are ignored, never
/// clamped into a price).
pub(crate) fn estimate_cost(table: &PriceTable, model: &str, usage: &TokenUsage) -> Option<f64> {
    if !usage.sanitized().has_billable_counts() {
        return None;
    }
    let cost = table.lookup(model)?.cost(usage);
    cost.is_finite().then_some(cost)
}

/// Model prices keyed by name, with name resolution for dated and provider-prefixed names.
///
/// A table is a stack of layers: prices set with [`PriceTable::insert`] on top, then the
/// lists, the overriding ones of [`PriceTable::with_overrides`] first. A lookup tries each
/// layer in turn with the full name resolution, so a user's `gpt-4o` price also applies to
/// `openai/gpt-4o-2024-08-06` even though the built-in list has that dated name. Cloning is
/// cheap (lists are shared).
#[derive(Clone, Default)]
pub(crate) struct PriceTable {
    /// Prices set with `insert`.
    inserted: Layer,
    /// Parsed lists, highest priority first.
    layers: Vec<Arc<Layer>>,
}

/// One price list. Names are matched case-insensitively; when a list holds names that differ
/// only in case (some gateways list both), an exact-case match is tried first and the
/// all-lowercase spelling wins otherwise.
#[derive(Clone, Default)]
struct Layer {
    /// Lowercased name -> price.
    folded: HashMap<String, ModelPrice>,
    /// Names as written in the list, for exact-case matches.
    exact: HashMap<String, ModelPrice>,
}

impl Layer {
    fn get(&self, original: &str, candidates: &[String]) -> Option<&ModelPrice> {
        self.exact
            .get(original)
            .or_else(|| candidates.iter().find_map(|c| self.folded.get(c)))
    }

    /// How many names the layer prices.
    fn models(&self) -> usize {
        self.exact.len()
    }
}

impl fmt::Debug for PriceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: Vec<usize> = self.layers.iter().map(|l| l.models()).collect();
        f.debug_struct("PriceTable")
            .field("inserted_models", &self.inserted.models())
            .field("models_per_list", &sizes)
            .finish()
    }
}

static BUILTIN: LazyLock<PriceTable> =
    LazyLock::new(|| match PriceTable::from_json_str(BUILTIN_JSON) {
        Ok(table) => table,
        Err(err) => {
            crate::diag::warn_once(
                "builtin-model-prices",
                format!(
                    "the built-in model price list is unusable ({err}); costs will not be estimated"
                ),
            );
            PriceTable::default()
        }
    });

impl PriceTable {
    /// The built-in prices from `data/model_prices.json`, parsed on first call.
    pub(crate) fn builtin() -> &'static PriceTable {
        &BUILTIN
    }

    /// Parses a price list in the format of `data/model_prices.json`: a JSON object mapping
    /// model names to objects with `input_cost_per_mil_tokens`, `output_cost_per_mil_tokens`
    /// and optionally `input_cache_read_cost_per_mil_tokens`,
    /// `input_cache_write_cost_per_mil_tokens`, `input_cache_write_5m_cost_per_mil_tokens`,
    /// `input_cache_write_1h_cost_per_mil_tokens` and `parent`. Other fields are ignored, so
    /// Braintrust's full model list is accepted as is. An entry without both an input and an
    /// output price takes its `parent`'s price if that has one, else it is not priced.
    ///
    /// # Errors
    ///
    /// [`CostError::Json`] for invalid JSON, [`CostError::Format`] for a top level or entry
    /// that is not an object, an empty model name or a non-string `parent`, and
    /// [`CostError::InvalidPrice`] for a price that is not a number, is negative (other than
    /// the `-1000000` "variable price" marker, read as absent) or is not finite.
    pub(crate) fn from_json_str(s: &str) -> Result<PriceTable, CostError> {
        let value: Value = serde_json::from_str(s).map_err(|e| CostError::Json(e.to_string()))?;
        let models = match value {
            Value::Object(models) => models,
            other => {
                return Err(CostError::Format(format!(
                    "expected an object mapping model names to price entries, found {}",
                    kind(&other)
                )));
            }
        };
        let mut entries = HashMap::with_capacity(models.len());
        for (name, entry) in &models {
            if name.trim().is_empty() {
                return Err(CostError::Format("a model name is empty".to_owned()));
            }
            entries.insert(name.as_str(), parse_entry(name, entry)?);
        }
        let mut layer = Layer::default();
        // `models` is sorted, which keeps the choice among case variants deterministic.
        for name in models.keys() {
            if let Some(price) = resolve_parent_price(name, &entries) {
                add_listed(&mut layer, name, price);
            }
        }
        Ok(PriceTable {
            inserted: Layer::default(),
            layers: vec![Arc::new(layer)],
        })
    }

    /// A table where every entry of `other` wins over every entry of `self` (both keep their
    /// name resolution; see the type docs).
    pub(crate) fn with_overrides(&self, other: &PriceTable) -> PriceTable {
        let mut layers = other.layers.clone();
        if self.inserted.models() > 0 {
            layers.push(Arc::new(self.inserted.clone()));
        }
        layers.extend(self.layers.iter().cloned());
        PriceTable {
            inserted: other.inserted.clone(),
            layers,
        }
    }

    /// Sets the price of `model` (matched case-insensitively, with the same name resolution
    /// as the lists), winning over everything already in the table. A blank name is ignored.
    pub(crate) fn insert(&mut self, model: &str, price: ModelPrice) {
        let name = model.trim();
        if name.is_empty() {
            return;
        }
        let folded = name.to_ascii_lowercase();
        self.inserted
            .exact
            .retain(|k, _| k.to_ascii_lowercase() != folded);
        self.inserted.exact.insert(name.to_owned(), price);
        self.inserted.folded.insert(folded, price);
    }

    /// The price of `model`, or `None` when it is not known.
    ///
    /// The name is matched case-insensitively, first as given, then with routing prefixes
    /// peeled one at a time (`openai/`, `models/`, `projects/../locations/../`,
    /// `publishers/<vendor>/models/`, Bedrock geo profiles like `us.` and the Bedrock
    /// `anthropic.` id with its `-v2:0` suffix, ARNs), each also with version suffixes
    /// stripped (`@20240620`, `-latest`, `-2024-08-06`, `-20241022`), and finally bare names
    /// under first-party listings (`publishers/anthropic/models/claude-3-5-sonnet`). The
    /// first listed name wins, so a dated name that is listed keeps its own price. There is
    /// no loose prefix matching: `gpt-4o-mini-foo` is unknown, never `gpt-4o-mini`.
    pub(crate) fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        let original = model.trim();
        let candidates = candidate_names(original);
        if candidates.is_empty() {
            return None;
        }
        std::iter::once(&self.inserted)
            .chain(self.layers.iter().map(Arc::as_ref))
            .find_map(|layer| layer.get(original, &candidates))
    }
}

/// Adds a listed entry; unlike [`PriceTable::insert`] it keeps case variants apart.
fn add_listed(layer: &mut Layer, name: &str, price: ModelPrice) {
    let name = name.trim();
    let folded = name.to_ascii_lowercase();
    layer.exact.insert(name.to_owned(), price);
    if folded == name {
        layer.folded.insert(folded, price);
    } else {
        layer.folded.entry(folded).or_insert(price);
    }
}

/// One entry as written: its own price (if complete) and its parent's name.
struct RawEntry {
    price: Option<ModelPrice>,
    parent: Option<String>,
}

fn parse_entry(model: &str, entry: &Value) -> Result<RawEntry, CostError> {
    let Value::Object(map) = entry else {
        return Err(CostError::Format(format!(
            "the entry for model {model:?} is {} instead of an object",
            kind(entry)
        )));
    };
    let input = price_field(model, map, FIELD_INPUT)?;
    let output = price_field(model, map, FIELD_OUTPUT)?;
    let cache_read = price_field(model, map, FIELD_CACHE_READ)?;
    let cache_write = price_field(model, map, FIELD_CACHE_WRITE)?;
    let cache_write_5m = price_field(model, map, FIELD_CACHE_WRITE_5M)?;
    let cache_write_1h = price_field(model, map, FIELD_CACHE_WRITE_1H)?;
    let parent = match map.get(FIELD_PARENT) {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(other) => {
            return Err(CostError::Format(format!(
                "the parent of model {model:?} is {} instead of a string",
                kind(other)
            )));
        }
    };
    let price = match (input, output) {
        (Some(input_per_mtok), Some(output_per_mtok)) => Some(ModelPrice {
            input_per_mtok,
            output_per_mtok,
            cache_read_per_mtok: cache_read,
            cache_write_per_mtok: cache_write.or(cache_write_5m),
            cache_write_5m_per_mtok: cache_write_5m,
            cache_write_1h_per_mtok: cache_write_1h,
        }),
        _ => None,
    };
    Ok(RawEntry { price, parent })
}

fn price_field(
    model: &str,
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<f64>, CostError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v == VARIABLE_PRICE_SENTINEL => Ok(None),
            Some(v) => check_price(model, field, v).map(Some),
            None => Err(invalid(model, field, format!("{n} is not representable"))),
        },
        Some(other) => Err(invalid(
            model,
            field,
            format!("expected a number, found {}", kind(other)),
        )),
    }
}

fn check_price(model: &str, field: &'static str, value: f64) -> Result<f64, CostError> {
    if !value.is_finite() {
        Err(invalid(model, field, format!("{value} is not finite")))
    } else if value < 0.0 {
        Err(invalid(model, field, format!("{value} is negative")))
    } else {
        // `+ 0.0` turns -0.0 into 0.0 so costs never print as "-0".
        Ok(value + 0.0)
    }
}

fn invalid(model: &str, field: &'static str, detail: String) -> CostError {
    CostError::InvalidPrice {
        model: model.to_owned(),
        field,
        detail,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The entry's own price, else the first priced ancestor's (bounded, so cycles end).
fn resolve_parent_price(name: &str, entries: &HashMap<&str, RawEntry>) -> Option<ModelPrice> {
    let mut entry = entries.get(name)?;
    for _ in 0..MAX_PARENT_DEPTH {
        if let Some(price) = entry.price {
            return Some(price);
        }
        entry = entries.get(entry.parent.as_deref()?)?;
    }
    None
}

/// Every lowercase name `model` may be listed under, most specific first (see
/// [`PriceTable::lookup`]). Each step only removes a well-defined prefix or suffix.
fn candidate_names(model: &str) -> Vec<String> {
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

    /// Relative comparison: costs are sums of products of decimal prices.
    fn assert_cost(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a cost");
        assert!(
            (actual - expected).abs() <= 1e-12 * expected.abs().max(1e-9),
            "cost {actual} != expected {expected}"
        );
    }

    fn usage(prompt: f64, cached: f64, completion: f64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: Some(prompt),
            prompt_cached_tokens: Some(cached),
            completion_tokens: Some(completion),
            ..TokenUsage::default()
        }
    }

    fn price_of(model: &str) -> ModelPrice {
        *PriceTable::builtin().lookup(model).expect(model)
    }

    #[test]
    fn builtin_list_parses_and_keeps_every_priced_model() {
        let source: Map<String, Value> = serde_json::from_str(BUILTIN_JSON).unwrap();
        assert_eq!(source.len(), 1259, "every upstream model is shipped");
        let table = PriceTable::builtin();
        assert_eq!(table.layers.len(), 1);
        // 1,081 entries carry both prices (the 5 routers priced -1000000 do not), 5 more
        // inherit them from a parent; the rest (image models priced per image, ...) have none.
        assert_eq!(table.layers[0].models(), 1086);
    }

    #[test]
    fn gpt_4o_with_cached_prompt() {
        // gpt-4o: input 2.5, output 10, cache read 1.25 $/Mtok.
        // (1000 - 400) * 2.5 + 400 * 1.25 + 500 * 10 = 1500 + 500 + 5000 = 7000 -> $0.007
        let cost = estimate_cost(
            PriceTable::builtin(),
            "gpt-4o",
            &usage(1000.0, 400.0, 500.0),
        );
        assert_cost(cost, 0.007);
    }

    #[test]
    fn gpt_4o_mini_with_cached_prompt() {
        // gpt-4o-mini: input 0.15, output 0.6, cache read 0.075.
        // 976 * 0.15 + 1024 * 0.075 + 300 * 0.6 = 146.4 + 76.8 + 180 = 403.2 -> $0.0004032
        let cost = estimate_cost(
            PriceTable::builtin(),
            "gpt-4o-mini",
            &usage(2000.0, 1024.0, 300.0),
        );
        assert_cost(cost, 0.000_403_2);
    }

    #[test]
    fn claude_sonnet_4_5_with_ttl_cache_writes() {
        // claude-sonnet-4-5: input 3, output 15, cache read 0.3, write 3.75 (5m 3.75, 1h 6).
        let mut u = usage(3500.0, 500.0, 400.0);
        u.prompt_cache_creation_5m_tokens = Some(1500.0);
        u.prompt_cache_creation_1h_tokens = Some(500.0);
        // uncached 3500 - 500 - 2000 = 1000: 1000 * 3 = 3000; cached 500 * 0.3 = 150;
        // writes 1500 * 3.75 + 500 * 6 = 8625; output 400 * 15 = 6000 -> 17775 -> $0.017775
        assert_cost(
            estimate_cost(PriceTable::builtin(), "claude-sonnet-4-5", &u),
            0.017_775,
        );
        // With only the aggregate (2000 writes) the single write rate applies:
        // 3000 + 150 + 2000 * 3.75 + 6000 = 16650 -> $0.01665
        let mut aggregate = usage(3500.0, 500.0, 400.0);
        aggregate.prompt_cache_creation_tokens = Some(2000.0);
        assert_cost(
            estimate_cost(
                PriceTable::builtin(),
                "claude-sonnet-4-5-20250929",
                &aggregate,
            ),
            0.016_65,
        );
        // A split that does not cover the aggregate falls back to the aggregate rate on
        // max(2000, 1000) = 2000 writes: same $0.01665.
        aggregate.prompt_cache_creation_5m_tokens = Some(1000.0);
        assert_cost(
            estimate_cost(PriceTable::builtin(), "claude-sonnet-4-5", &aggregate),
            0.016_65,
        );
    }

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
    fn gemini_with_and_without_a_cache_read_price() {
        // gemini-2.5-pro: input 1.25, output 10, cache read 0.125; completion includes thoughts.
        // 3000 * 1.25 + 2000 * 0.125 + 3000 * 10 = 3750 + 250 + 30000 = 34000 -> $0.034
        let mut u = usage(5000.0, 2000.0, 3000.0);
        u.completion_reasoning_tokens = Some(1200.0);
        assert_cost(
            estimate_cost(PriceTable::builtin(), "gemini-2.5-pro", &u),
            0.034,
        );
        // gemini-1.5-pro: input 1.25, output 5, no cache price: cached tokens at input rate.
        // 600 * 1.25 + 400 * 1.25 + 100 * 5 = 1250 + 500 = 1750 -> $0.00175
        let cost = estimate_cost(
            PriceTable::builtin(),
            "models/gemini-1.5-pro",
            &usage(1000.0, 400.0, 100.0),
        );
        assert_cost(cost, 0.001_75);
    }

    #[test]
    fn o_series_reasoning_tokens_are_not_billed_twice() {
        // o3-mini: input 1.1, output 4.4. 1200 * 1.1 + 2000 * 4.4 = 1320 + 8800 -> $0.01012
        let mut u = usage(1200.0, 0.0, 2000.0);
        u.completion_reasoning_tokens = Some(1500.0);
        assert_cost(
            estimate_cost(PriceTable::builtin(), "o3-mini", &u),
            0.010_12,
        );
        // o1: input 15, output 60, cache read 7.5.
        // 5000 * 15 + 5000 * 7.5 + 1000 * 60 = 75000 + 37500 + 60000 -> $0.1725
        let cost = estimate_cost(
            PriceTable::builtin(),
            "o1",
            &usage(10_000.0, 5000.0, 1000.0),
        );
        assert_cost(cost, 0.1725);
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
    fn bad_counts_are_ignored_and_no_counts_give_no_cost() {
        let table = PriceTable::builtin();
        assert_eq!(estimate_cost(table, "gpt-4o", &TokenUsage::default()), None);
        let only_reasoning = TokenUsage {
            completion_reasoning_tokens: Some(10.0),
            ..TokenUsage::default()
        };
        assert_eq!(estimate_cost(table, "gpt-4o", &only_reasoning), None);
        let garbage = TokenUsage {
            prompt_tokens: Some(f64::NAN),
            completion_tokens: Some(-5.0),
            prompt_cached_tokens: Some(f64::INFINITY),
            ..TokenUsage::default()
        };
        assert_eq!(estimate_cost(table, "gpt-4o", &garbage), None);
        // Ignored, not clamped: the negative cache count drops out, the rest is billed.
        // 1000 * 2.5 + 100 * 10 = 3500 -> $0.0035
        let mut partly_bad = usage(1000.0, -400.0, 100.0);
        partly_bad.prompt_cache_creation_tokens = Some(f64::NAN);
        assert_cost(estimate_cost(table, "gpt-4o", &partly_bad), 0.0035);
        // More cached than prompt tokens saturates the uncached part at zero:
        // 0 * 2.5 + 500 * 1.25 = 625 -> $0.000625
        assert_cost(
            estimate_cost(table, "gpt-4o", &usage(100.0, 500.0, 0.0)),
            0.000_625,
        );
    }

    #[test]
    fn overrides_win_and_keep_name_resolution() {
        let custom = PriceTable::from_json_str(
            r#"{"GPT-4o": {"input_cost_per_mil_tokens": 1, "output_cost_per_mil_tokens": 2},
                "in-house": {"input_cost_per_mil_tokens": 0, "output_cost_per_mil_tokens": 0}}"#,
        )
        .unwrap();
        let table = PriceTable::builtin().with_overrides(&custom);
        // 1000 * 1 + 1000 * 2 = 3000 -> $0.003, also for a dated, prefixed name that the
        // built-in list has on its own (gpt-4o-2024-08-06).
        for name in ["gpt-4o", "openai/gpt-4o-2024-08-06"] {
            assert_cost(
                estimate_cost(&table, name, &usage(1000.0, 0.0, 1000.0)),
                0.003,
            );
        }
        assert_eq!(
            table.lookup("gpt-4o-mini"),
            PriceTable::builtin().lookup("gpt-4o-mini")
        );
        assert_eq!(
            estimate_cost(&table, "in-house", &usage(5.0, 0.0, 5.0)),
            Some(0.0)
        );

        let mut table = table;
        let price = ModelPrice::new(7.0, 8.0)
            .unwrap()
            .with_cache_read(0.7)
            .unwrap();
        table.insert("Gpt-4o", price);
        table.insert("in-house", price);
        table.insert("in-house", ModelPrice::new(9.0, 9.0).unwrap());
        assert_eq!(table.lookup("gpt-4o"), Some(&price));
        assert_eq!(table.lookup("GPT-4O"), Some(&price));
        // Inserted prices beat listed dated names too (gpt-4o-2024-05-13 is listed at 5 / 15).
        assert_eq!(table.lookup("gpt-4o-2024-05-13"), Some(&price));
        assert_eq!(table.lookup("in-house").unwrap().input_per_mtok, 9.0);
        assert_eq!(price.cache_read_per_mtok, Some(0.7));
        // Stacking again: the new overrides win, the inserted prices stay above the rest.
        let newer = PriceTable::from_json_str(
            r#"{"in-house": {"input_cost_per_mil_tokens": 4, "output_cost_per_mil_tokens": 4}}"#,
        )
        .unwrap();
        let stacked = table.with_overrides(&newer);
        assert_eq!(stacked.lookup("in-house").unwrap().input_per_mtok, 4.0);
        assert_eq!(stacked.lookup("gpt-4o-2024-05-13"), Some(&price));
        assert_eq!(
            format!("{stacked:?}"),
            "PriceTable { inserted_models: 0, models_per_list: [1, 2, 2, 1086] }"
        );
        // The shared built-in table is untouched.
        assert_eq!(price_of("gpt-4o").input_per_mtok, 2.5);
        assert_eq!(price_of("gpt-4o-2024-05-13").input_per_mtok, 5.0);
    }

    #[test]
    fn case_variants_in_one_list_stay_apart() {
        let table = PriceTable::from_json_str(
            r#"{"Org/Model": {"input_cost_per_mil_tokens": 1, "output_cost_per_mil_tokens": 1},
                "org/model": {"input_cost_per_mil_tokens": 2, "output_cost_per_mil_tokens": 2}}"#,
        )
        .unwrap();
        assert_eq!(table.lookup("Org/Model").unwrap().input_per_mtok, 1.0);
        assert_eq!(table.lookup("org/model").unwrap().input_per_mtok, 2.0);
        assert_eq!(table.lookup("ORG/MODEL").unwrap().input_per_mtok, 2.0);
    }

    #[test]
    fn parents_and_the_variable_price_marker() {
        let table = PriceTable::from_json_str(
            r#"{"base": {"input_cost_per_mil_tokens": 1, "output_cost_per_mil_tokens": 2,
                         "input_cache_write_5m_cost_per_mil_tokens": 1.25},
                "child": {"parent": "base"},
                "grandchild": {"parent": "child", "format": "openai", "displayName": "x"},
                "loop-a": {"parent": "loop-b"}, "loop-b": {"parent": "loop-a"},
                "router": {"input_cost_per_mil_tokens": -1000000,
                           "output_cost_per_mil_tokens": -1000000}}"#,
        )
        .unwrap();
        let base = *table.lookup("base").unwrap();
        assert_eq!(
            base.cache_write_per_mtok,
            Some(1.25),
            "5m rate is the write rate"
        );
        assert_eq!(table.lookup("grandchild"), Some(&base));
        assert!(table.lookup("loop-a").is_none());
        assert!(table.lookup("router").is_none());
    }

    #[test]
    fn malformed_lists_give_clear_errors() {
        let err = |s: &str| PriceTable::from_json_str(s).unwrap_err();
        assert!(matches!(err("{"), CostError::Json(_)));
        assert!(matches!(err("[]"), CostError::Format(_)));
        assert!(matches!(err(r#"{"m": 3}"#), CostError::Format(_)));
        assert!(matches!(err(r#"{" ": {}}"#), CostError::Format(_)));
        assert!(matches!(
            err(r#"{"m": {"parent": 1}}"#),
            CostError::Format(_)
        ));
        let negative =
            err(r#"{"m": {"input_cost_per_mil_tokens": -2, "output_cost_per_mil_tokens": 1}}"#);
        assert_eq!(
            negative.to_string(),
            "invalid price input_cost_per_mil_tokens for model \"m\": -2 is negative"
        );
        let text = err(r#"{"m": {"output_cost_per_mil_tokens": "1.5"}}"#);
        assert!(
            text.to_string()
                .contains("expected a number, found a string"),
            "{text}"
        );
        assert!(err("{\"m\": {} ,}").to_string().contains("line 1"));
        assert!(
            PriceTable::from_json_str("{}")
                .unwrap()
                .lookup("x")
                .is_none()
        );
    }

    #[test]
    fn invalid_prices_in_code_are_rejected() {
        assert!(ModelPrice::new(f64::NAN, 1.0).is_err());
        assert!(ModelPrice::new(1.0, -0.5).is_err());
        assert!(
            ModelPrice::new(1.0, 1.0)
                .unwrap()
                .with_cache_write(f64::INFINITY)
                .is_err()
        );
        let ttl = ModelPrice::new(1.0, 1.0)
            .unwrap()
            .with_cache_write_ttl(1.25, 2.0)
            .unwrap();
        // 5m and 1h writes at their own rates: (100 * 1.25 + 100 * 2) / 1e6
        let u = TokenUsage {
            prompt_tokens: Some(200.0),
            prompt_cache_creation_5m_tokens: Some(100.0),
            prompt_cache_creation_1h_tokens: Some(100.0),
            ..TokenUsage::default()
        };
        assert_cost(Some(ttl.cost(&u)), 0.000_325);
        let mut table = PriceTable::default();
        table.insert("  ", ttl);
        assert!(table.lookup("").is_none());
    }

    #[test]
    fn token_usage_from_metrics() {
        let u = TokenUsage::from_metrics([
            ("prompt_tokens", 10.0),
            ("tokens", 99.0),
            ("completion_tokens", 5.0),
            ("prompt_cache_creation_1h_tokens", 3.0),
            ("completion_tokens", 6.0),
        ]);
        assert_eq!(u.prompt_tokens, Some(10.0));
        assert_eq!(u.completion_tokens, Some(6.0));
        assert_eq!(u.prompt_cache_creation_1h_tokens, Some(3.0));
        assert_eq!(u.prompt_cached_tokens, None);
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
