//! What tokens cost: USD per million input, cached input and output tokens,
//! built in for the catalog's models (published list prices; a provider
//! may change them) and overridden per model by `prices:`. Held as
//! picodollars per token, so a request's cost is whole-number arithmetic.
//!
//! Lookup is by exact name (case-insensitive), then by the longest priced
//! name that a dated variant starts with (`gpt-4o-2024-08-06` → `gpt-4o`),
//! then without a `vendor/` prefix (`openai/gpt-4o`). A model without a
//! price costs nothing.

use super::quota::picodollars;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A model's price in picodollars per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

impl Price {
    /// Picodollars for `input` prompt tokens (of which `cached` were read
    /// from the provider's cache) and `output` tokens (saturating).
    pub fn cost(&self, input: u64, cached: u64, output: u64) -> u64 {
        let cached = cached.min(input);
        (input - cached)
            .saturating_mul(self.input)
            .saturating_add(cached.saturating_mul(self.cached_input))
            .saturating_add(output.saturating_mul(self.output))
    }
}

/// `(name, input, cached input, output)` in USD per million tokens.
const BUILT_IN: &[(&str, f64, f64, f64)] = &[
    ("gpt-5", 1.25, 0.125, 10.0),
    ("gpt-5-mini", 0.25, 0.025, 2.0),
    ("gpt-5-nano", 0.05, 0.005, 0.4),
    ("gpt-5-chat-latest", 1.25, 0.125, 10.0),
    ("gpt-5-chat", 1.25, 0.125, 10.0),
    ("gpt-4.1", 2.0, 0.5, 8.0),
    ("gpt-4.1-mini", 0.4, 0.1, 1.6),
    ("gpt-4.1-nano", 0.1, 0.025, 0.4),
    ("gpt-4o", 2.5, 1.25, 10.0),
    ("gpt-4o-mini", 0.15, 0.075, 0.6),
    ("chatgpt-4o-latest", 5.0, 5.0, 15.0),
    ("gpt-4-turbo", 10.0, 10.0, 30.0),
    ("gpt-4", 30.0, 30.0, 60.0),
    ("gpt-3.5-turbo", 0.5, 0.5, 1.5),
    ("o1", 15.0, 7.5, 60.0),
    ("o1-mini", 1.1, 0.55, 4.4),
    ("o1-preview", 15.0, 7.5, 60.0),
    ("o3", 2.0, 0.5, 8.0),
    ("o3-mini", 1.1, 0.55, 4.4),
    ("o4-mini", 1.1, 0.275, 4.4),
    ("text-embedding-3-small", 0.02, 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.13, 0.0),
    ("text-embedding-ada-002", 0.1, 0.1, 0.0),
    ("claude-opus-4-5", 5.0, 0.5, 25.0),
    ("claude-sonnet-4-5", 3.0, 0.3, 15.0),
    ("claude-haiku-4-5", 1.0, 0.1, 5.0),
    ("claude-opus-4-1", 15.0, 1.5, 75.0),
    ("claude-opus-4-0", 15.0, 1.5, 75.0),
    ("claude-opus-4", 15.0, 1.5, 75.0),
    ("claude-sonnet-4-0", 3.0, 0.3, 15.0),
    ("claude-sonnet-4", 3.0, 0.3, 15.0),
    ("claude-3-7-sonnet", 3.0, 0.3, 15.0),
    ("claude-3-5-haiku", 0.8, 0.08, 4.0),
    ("gemini-3-pro-preview", 2.0, 0.2, 12.0),
    ("gemini-2.5-pro", 1.25, 0.125, 10.0),
    ("gemini-2.5-flash", 0.3, 0.03, 2.5),
    ("gemini-2.5-flash-lite", 0.1, 0.01, 0.4),
    ("gemini-2.0-flash", 0.1, 0.025, 0.4),
    ("gemini-2.0-flash-lite", 0.075, 0.075, 0.3),
];

/// `prices.<model>` as written: USD per million tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: f64,
    /// Default: the input price.
    pub cached_input: Option<f64>,
    pub output: f64,
}

/// Every price the gateway knows, by lowercase model name.
#[derive(Debug, Clone, Default)]
pub struct Prices(BTreeMap<String, Price>);

/// One price field in picodollars per token; `None` outside 0..=10000 USD.
fn per_token(usd_per_million: f64) -> Option<u64> {
    if !(0.0..=10_000.0).contains(&usd_per_million) {
        return None;
    }
    picodollars(usd_per_million).map(|p| p / 1_000_000)
}

impl Prices {
    /// The built-in prices with `overrides` on top. `known` says whether a
    /// model is one the gateway knows (catalogued or configured); an
    /// override for any other is an error naming it.
    pub fn with(
        overrides: BTreeMap<String, RawPrice>,
        known: impl Fn(&str) -> bool,
    ) -> Result<Prices, Vec<String>> {
        let mut map: BTreeMap<String, Price> = BUILT_IN
            .iter()
            .map(|(n, i, c, o)| {
                let p = |x: f64| per_token(x).unwrap_or(0);
                (
                    n.to_string(),
                    Price {
                        input: p(*i),
                        cached_input: p(*c),
                        output: p(*o),
                    },
                )
            })
            .collect();
        let mut e = Vec::new();
        for (model, raw) in overrides {
            let at = format!("prices.{model}");
            if !known(&model) && !map.contains_key(&model.to_ascii_lowercase()) {
                e.push(format!(
                    "{at}: unknown model {model:?} (not in the catalog nor served by an upstream; add it to models.catalog or an upstream's models)"
                ));
                continue;
            }
            let mut field = |name: &str, v: f64| {
                per_token(v).ok_or_else(|| {
                    e.push(format!(
                        "{at}.{name}: {v} is not a price from 0 to 10000 USD per million tokens"
                    ))
                })
            };
            let (input, output) = (field("input", raw.input), field("output", raw.output));
            let cached = field("cached_input", raw.cached_input.unwrap_or(raw.input));
            if let (Ok(input), Ok(cached_input), Ok(output)) = (input, cached, output) {
                map.insert(
                    model.to_ascii_lowercase(),
                    Price {
                        input,
                        cached_input,
                        output,
                    },
                );
            }
        }
        if e.is_empty() {
            Ok(Prices(map))
        } else {
            Err(e)
        }
    }

    /// The price of `model` (see the module's lookup rules).
    pub fn get(&self, model: &str) -> Option<Price> {
        self.lookup(model).or_else(|| {
            let (_, bare) = model.rsplit_once('/')?;
            self.lookup(bare)
        })
    }

    fn lookup(&self, model: &str) -> Option<Price> {
        if model.len() > 256 {
            return None;
        }
        // names are lowercase already, almost always: no copy then
        let lower = if model.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(model.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(model)
        };
        if let Some(p) = self.0.get(lower.as_ref()) {
            return Some(*p);
        }
        // a dated or `-latest` variant of a priced name (never another
        // model: `o1-pro` is not `o1`)
        let base = undated(&lower)?;
        self.0.get(base).copied()
    }

    /// Picodollars for one request's usage of `model`.
    pub fn cost(&self, model: &str, input: u64, cached: u64, output: u64) -> u64 {
        self.get(model).map_or(0, |p| p.cost(input, cached, output))
    }
}

/// `model` without its date (`-2024-08-06`, `-20241022`) or `-latest`
/// suffix; `None` when it has none.
fn undated(model: &str) -> Option<&str> {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if let Some(base) = model.strip_suffix("-latest") {
        return Some(base);
    }
    let (head, last) = model.rsplit_once('-')?;
    if last.len() == 8 && digits(last) {
        return Some(head);
    }
    // -YYYY-MM-DD
    let (head2, month) = head.rsplit_once('-')?;
    let (base, year) = head2.rsplit_once('-')?;
    let dated = year.len() == 4 && month.len() == 2 && last.len() == 2;
    (dated && digits(year) && digits(month) && digits(last)).then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_variants_and_overrides() {
        let raw: BTreeMap<String, RawPrice> = serde_yaml::from_str(
            "my-model: {input: 1, output: 2}\ngpt-4o: {input: 3, cached_input: 0.5, output: 4}",
        )
        .unwrap();
        let p = Prices::with(raw, |m| m == "my-model").unwrap();
        assert_eq!(p.get("my-model").unwrap().cached_input, 1_000_000);
        assert_eq!(p.get("gpt-4o-2024-08-06").unwrap().input, 3_000_000);
        assert_eq!(p.get("openai/gpt-4o-mini").unwrap().output, 600_000);
        assert_eq!(p.get("GPT-4.1-mini").unwrap().input, 400_000);
        assert!(p.get("llama-3").is_none());
        // other models of a family are not priced as their base
        assert!(p.get("o1-pro").is_none() && p.get("gpt-5-pro").is_none());
        assert_eq!(p.get("claude-3-5-haiku-20241022").unwrap().input, 800_000);
        assert_eq!(p.get("claude-3-7-sonnet-latest").unwrap().input, 3_000_000);
        // 1000 in (200 cached), 500 out at 3 / 0.5 / 4 USD per million
        assert_eq!(
            p.cost("gpt-4o", 1000, 200, 500),
            800 * 3_000_000 + 200 * 500_000 + 500 * 4_000_000
        );
        assert_eq!(p.cost("unknown", 1000, 0, 1000), 0);
    }

    #[test]
    fn bad_overrides_name_their_field() {
        let raw: BTreeMap<String, RawPrice> =
            serde_yaml::from_str("nope: {input: 1, output: 2}\ngpt-4o: {input: -1, output: 2}")
                .unwrap();
        let e = Prices::with(raw, |_| false).unwrap_err();
        assert!(
            e.iter()
                .any(|x| x.starts_with("prices.nope: unknown model")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|x| x.starts_with("prices.gpt-4o.input:")),
            "{e:?}"
        );
    }
}
