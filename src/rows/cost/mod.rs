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
//!
//! [`PriceTable`] (in `table`) holds the prices and reads price lists; `names` resolves the
//! many spellings of a model name to the names those lists use.

use std::fmt;

mod names;
mod table;

pub(crate) use table::PriceTable;

const FIELD_INPUT: &str = "input_cost_per_mil_tokens";
const FIELD_OUTPUT: &str = "output_cost_per_mil_tokens";
const FIELD_CACHE_READ: &str = "input_cache_read_cost_per_mil_tokens";
const FIELD_CACHE_WRITE: &str = "input_cache_write_cost_per_mil_tokens";
const FIELD_CACHE_WRITE_5M: &str = "input_cache_write_5m_cost_per_mil_tokens";
const FIELD_CACHE_WRITE_1H: &str = "input_cache_write_1h_cost_per_mil_tokens";

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
#[cfg(test)]
pub(crate) fn estimate_cost(table: &PriceTable, model: &str, usage: &TokenUsage) -> Option<f64> {
    estimate_cost_with(table.lookup(model)?, usage)
}

/// [`estimate_cost`] with the price already looked up.
pub(crate) fn estimate_cost_with(price: &ModelPrice, usage: &TokenUsage) -> Option<f64> {
    if !usage.sanitized().has_billable_counts() {
        return None;
    }
    let cost = price.cost(usage);
    cost.is_finite().then_some(cost)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative comparison: costs are sums of products of decimal prices.
    pub(super) fn assert_cost(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a cost");
        assert!(
            (actual - expected).abs() <= 1e-12 * expected.abs().max(1e-9),
            "cost {actual} != expected {expected}"
        );
    }

    pub(super) fn usage(prompt: f64, cached: f64, completion: f64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: Some(prompt),
            prompt_cached_tokens: Some(cached),
            completion_tokens: Some(completion),
            ..TokenUsage::default()
        }
    }

    pub(super) fn price_of(model: &str) -> ModelPrice {
        *PriceTable::builtin().lookup(model).expect(model)
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
}
