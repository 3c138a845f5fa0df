//! [`PriceTable`]: model prices in layers (inserted prices, then price lists, overriding
//! lists first), the built-in list, and the parser for the price-list JSON format.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use serde_json::{Map, Value};

use super::names::candidate_names;
use super::{
    CostError, FIELD_CACHE_READ, FIELD_CACHE_WRITE, FIELD_CACHE_WRITE_1H, FIELD_CACHE_WRITE_5M,
    FIELD_INPUT, FIELD_OUTPUT, ModelPrice, check_price, invalid,
};

/// The shipped price list (same format as Braintrust's proxy `model_list.json`).
const BUILTIN_JSON: &str = include_str!("../../../data/model_prices.json");

/// OpenRouter reports a price of `-1` per token for routers whose price depends on the model
/// they pick (`openrouter/auto`); the upstream list stores it as `-1 * 10^6` per million. It
/// means "price unknown", so such a field is read as absent rather than rejected.
const VARIABLE_PRICE_SENTINEL: f64 = -1_000_000.0;

/// The key naming the entry whose price an unpriced entry takes.
const FIELD_PARENT: &str = "parent";

/// How many `parent` links are followed for an entry that has no price of its own.
const MAX_PARENT_DEPTH: usize = 8;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::cost::estimate_cost;
    use crate::rows::cost::tests::{assert_cost, price_of, usage};

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
}
