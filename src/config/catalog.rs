//! What the gateway knows of models it may route to: context window and most
//! output tokens per answer. Built in for OpenAI's current models and the
//! GitHub Models list (published figures; a provider may change them), and
//! added to or overridden per model by `models.catalog`.
//!
//! Lookup ([`Catalog::get`]) is by exact name, case-insensitive, then by the
//! longest catalogued name that a dated or versioned variant starts with
//! (`gpt-4o-2024-08-06` → `gpt-4o`). Unknown models have no limits: nothing is
//! pre-checked for them.

/// A model's limits, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLimits {
    /// Prompt plus output.
    pub context: u64,
    /// Most output per answer; `None`: not known.
    pub max_output: Option<u64>,
}

/// `(name, context, max_output)`; names as clients and providers spell them.
const BUILT_IN: &[(&str, u64, u64)] = &[
    // OpenAI
    ("gpt-5", 400_000, 128_000),
    ("gpt-5-mini", 400_000, 128_000),
    ("gpt-5-nano", 400_000, 128_000),
    ("gpt-5-chat-latest", 128_000, 16_384),
    ("gpt-4.1", 1_047_576, 32_768),
    ("gpt-4.1-mini", 1_047_576, 32_768),
    ("gpt-4.1-nano", 1_047_576, 32_768),
    ("gpt-4o", 128_000, 16_384),
    ("gpt-4o-mini", 128_000, 16_384),
    ("chatgpt-4o-latest", 128_000, 16_384),
    ("gpt-4-turbo", 128_000, 4_096),
    ("gpt-4", 8_192, 8_192),
    ("gpt-3.5-turbo", 16_385, 4_096),
    ("o1", 200_000, 100_000),
    ("o1-mini", 128_000, 65_536),
    ("o1-preview", 128_000, 32_768),
    ("o3", 200_000, 100_000),
    ("o3-mini", 200_000, 100_000),
    ("o4-mini", 200_000, 100_000),
    ("text-embedding-3-small", 8_191, 0),
    ("text-embedding-3-large", 8_191, 0),
    ("text-embedding-ada-002", 8_191, 0),
    // Anthropic (the Messages API's names, with and without their dates)
    ("claude-opus-4-5", 200_000, 64_000),
    ("claude-opus-4-5-20251101", 200_000, 64_000),
    ("claude-sonnet-4-5", 200_000, 64_000),
    ("claude-sonnet-4-5-20250929", 200_000, 64_000),
    ("claude-haiku-4-5", 200_000, 64_000),
    ("claude-haiku-4-5-20251001", 200_000, 64_000),
    ("claude-opus-4-1", 200_000, 32_000),
    ("claude-opus-4-1-20250805", 200_000, 32_000),
    ("claude-opus-4-0", 200_000, 32_000),
    ("claude-opus-4-20250514", 200_000, 32_000),
    ("claude-sonnet-4-0", 200_000, 64_000),
    ("claude-sonnet-4-20250514", 200_000, 64_000),
    ("claude-3-7-sonnet-latest", 200_000, 64_000),
    ("claude-3-7-sonnet-20250219", 200_000, 64_000),
    ("claude-3-5-haiku-latest", 200_000, 8_192),
    ("claude-3-5-haiku-20241022", 200_000, 8_192),
    // Google Gemini (its OpenAI-compatible endpoint's names)
    ("gemini-3-pro-preview", 1_048_576, 65_536),
    ("gemini-2.5-pro", 1_048_576, 65_536),
    ("gemini-2.5-flash", 1_048_576, 65_536),
    ("gemini-2.5-flash-lite", 1_048_576, 65_536),
    ("gemini-2.0-flash", 1_048_576, 8_192),
    ("gemini-2.0-flash-lite", 1_048_576, 8_192),
    // GitHub Models (models.github.ai names)
    ("openai/gpt-5", 400_000, 128_000),
    ("openai/gpt-5-mini", 400_000, 128_000),
    ("openai/gpt-5-nano", 400_000, 128_000),
    ("openai/gpt-5-chat", 128_000, 16_384),
    ("openai/gpt-4.1", 1_047_576, 32_768),
    ("openai/gpt-4.1-mini", 1_047_576, 32_768),
    ("openai/gpt-4.1-nano", 1_047_576, 32_768),
    ("openai/gpt-4o", 128_000, 16_384),
    ("openai/gpt-4o-mini", 128_000, 16_384),
    ("openai/o1", 200_000, 100_000),
    ("openai/o1-mini", 128_000, 65_536),
    ("openai/o1-preview", 128_000, 32_768),
    ("openai/o3", 200_000, 100_000),
    ("openai/o3-mini", 200_000, 100_000),
    ("openai/o4-mini", 200_000, 100_000),
    ("openai/text-embedding-3-small", 8_191, 0),
    ("openai/text-embedding-3-large", 8_191, 0),
    ("ai21-labs/ai21-jamba-1.5-large", 262_144, 4_096),
    ("ai21-labs/ai21-jamba-1.5-mini", 262_144, 4_096),
    ("cohere/cohere-command-a", 131_072, 4_096),
    ("cohere/cohere-command-r-08-2024", 131_072, 4_096),
    ("cohere/cohere-command-r-plus-08-2024", 131_072, 4_096),
    ("cohere/cohere-embed-v3-english", 512, 0),
    ("cohere/cohere-embed-v3-multilingual", 512, 0),
    ("deepseek/deepseek-r1", 128_000, 4_096),
    ("deepseek/deepseek-r1-0528", 128_000, 4_096),
    ("deepseek/deepseek-v3-0324", 128_000, 4_096),
    ("meta/llama-3.2-11b-vision-instruct", 128_000, 4_096),
    ("meta/llama-3.2-90b-vision-instruct", 128_000, 4_096),
    ("meta/llama-3.3-70b-instruct", 128_000, 4_096),
    (
        "meta/llama-4-maverick-17b-128e-instruct-fp8",
        1_000_000,
        4_096,
    ),
    ("meta/llama-4-scout-17b-16e-instruct", 10_000_000, 4_096),
    ("meta/meta-llama-3.1-405b-instruct", 131_072, 4_096),
    ("meta/meta-llama-3.1-8b-instruct", 131_072, 4_096),
    ("microsoft/mai-ds-r1", 128_000, 4_096),
    ("microsoft/phi-3.5-mini-instruct", 131_072, 4_096),
    ("microsoft/phi-3.5-moe-instruct", 131_072, 4_096),
    ("microsoft/phi-3.5-vision-instruct", 131_072, 4_096),
    ("microsoft/phi-3-medium-128k-instruct", 131_072, 4_096),
    ("microsoft/phi-3-medium-4k-instruct", 4_096, 4_096),
    ("microsoft/phi-3-mini-128k-instruct", 131_072, 4_096),
    ("microsoft/phi-3-mini-4k-instruct", 4_096, 4_096),
    ("microsoft/phi-3-small-128k-instruct", 131_072, 4_096),
    ("microsoft/phi-3-small-8k-instruct", 8_192, 4_096),
    ("microsoft/phi-4", 16_384, 16_384),
    ("microsoft/phi-4-mini-instruct", 128_000, 4_096),
    ("microsoft/phi-4-mini-reasoning", 128_000, 4_096),
    ("microsoft/phi-4-multimodal-instruct", 128_000, 4_096),
    ("microsoft/phi-4-reasoning", 32_768, 4_096),
    ("mistral-ai/codestral-2501", 256_000, 4_096),
    ("mistral-ai/ministral-3b", 131_072, 4_096),
    ("mistral-ai/mistral-large-2411", 128_000, 4_096),
    ("mistral-ai/mistral-medium-2505", 128_000, 4_096),
    ("mistral-ai/mistral-nemo", 131_072, 4_096),
    ("mistral-ai/mistral-small-2503", 128_000, 4_096),
    ("xai/grok-3", 131_072, 4_096),
    ("xai/grok-3-mini", 131_072, 4_096),
];

/// Whether `model` (a provider's name, with or without its `vendor/`
/// prefix) reasons and takes `reasoning_effort`: OpenAI's o-series and
/// gpt-5 (not its chat variant), DeepSeek R1, Gemini 2.5 and later, QwQ,
/// and names that say so (`-thinking`, `-reasoning`).
pub fn reasons(model: &str) -> bool {
    let m = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let o_series = ["o1", "o3", "o4"]
        .iter()
        .any(|p| m == *p || m.starts_with(&format!("{p}-")));
    let gpt5 = m.starts_with("gpt-5") && !m.contains("chat");
    let named = [
        "deepseek-r1",
        "gemini-2.5",
        "gemini-3",
        "qwq",
        "-thinking",
        "-reasoning",
    ]
    .iter()
    .any(|p| m.contains(p));
    o_series || gpt5 || named
}

/// The models the gateway knows limits for (built-in plus `models.catalog`).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// By lower-cased name.
    /// Fixed once built, so a fast (not collision-hardened) hash is safe
    /// for the client-chosen names looked up in it.
    by_name: foldhash::HashMap<String, ModelLimits>,
    /// Every name, built-in ones first in their order, then `models.catalog`'s.
    names: Vec<String>,
}

impl Catalog {
    /// The built-in catalog with `extra` (from `models.catalog`) on top.
    pub fn with(extra: impl IntoIterator<Item = (String, ModelLimits)>) -> Catalog {
        let mut by_name: foldhash::HashMap<String, ModelLimits> = BUILT_IN
            .iter()
            .map(|&(n, context, out)| {
                let max_output = (out > 0).then_some(out);
                (
                    n.to_string(),
                    ModelLimits {
                        context,
                        max_output,
                    },
                )
            })
            .collect();
        let mut names: Vec<String> = BUILT_IN.iter().map(|&(n, ..)| n.to_string()).collect();
        for (name, limits) in extra {
            let lower = name.to_ascii_lowercase();
            if by_name.insert(lower.clone(), limits).is_none() {
                names.push(lower);
            }
        }
        Catalog { by_name, names }
    }

    /// Every model name the catalog knows, built-in ones first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// How many models are known.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The first of `names` the catalog knows, with its limits (a model can
    /// be known by its client name or by the name its upstream uses).
    pub fn first_known<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Option<(&'a str, ModelLimits)> {
        names.into_iter().find_map(|m| Some((m, self.get(m)?)))
    }

    /// The limits of `model` (see the module doc for how names match).
    pub fn get(&self, model: &str) -> Option<ModelLimits> {
        self.entry(model).map(|(_, l)| l)
    }

    /// The catalog's own name for `model` (`gpt-4o` for `gpt-4o-2024-08-06`):
    /// a bounded set, for metric labels.
    pub fn known_name(&self, model: &str) -> Option<&str> {
        self.entry(model).map(|(n, _)| n)
    }

    fn entry(&self, model: &str) -> Option<(&str, ModelLimits)> {
        if model.is_empty() || model.len() > 256 {
            return None;
        }
        if let Some((n, l)) = self.by_name.get_key_value(model) {
            return Some((n, *l)); // already the catalog's spelling: no allocation
        }
        let lower = model.to_ascii_lowercase();
        if let Some((n, l)) = self.by_name.get_key_value(&lower) {
            return Some((n, *l));
        }
        // a dated or versioned variant: `gpt-4o-2024-08-06`, `o3-mini-high`
        let mut end = lower.len();
        while let Some(i) = lower[..end].rfind('-') {
            if let Some((n, l)) = self.by_name.get_key_value(&lower[..i]) {
                return Some((n, *l));
            }
            end = i;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_models_by_name() {
        for yes in [
            "o3",
            "o4-mini",
            "openai/o1-preview",
            "gpt-5",
            "gpt-5-mini",
            "deepseek/DeepSeek-R1-0528",
            "gemini-2.5-flash",
            "qwq-32b",
            "phi-4-reasoning",
            "claude-3-7-sonnet-thinking",
        ] {
            assert!(reasons(yes), "{yes}");
        }
        for no in [
            "gpt-4o",
            "gpt-5-chat-latest",
            "o1x",
            "gemini-2.0-flash",
            "llama3.2",
            "omni",
        ] {
            assert!(!reasons(no), "{no}");
        }
    }

    #[test]
    fn known_names_are_the_catalogs_own() {
        let c = Catalog::with([]);
        assert_eq!(c.known_name("GPT-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(c.known_name("no-such-model-x"), None);
        assert_eq!(c.known_name(&"a".repeat(300)), None);
    }

    #[test]
    fn exact_variant_and_override() {
        let c = Catalog::with([(
            "My-Model".to_string(),
            ModelLimits {
                context: 1000,
                max_output: Some(10),
            },
        )]);
        assert_eq!(c.get("gpt-4o").map(|l| l.context), Some(128_000));
        assert_eq!(c.get("GPT-4o-2024-08-06").map(|l| l.context), Some(128_000));
        assert_eq!(
            c.get("gpt-4o-mini").map(|l| l.max_output),
            Some(Some(16_384))
        );
        assert_eq!(
            c.get("openai/gpt-4.1-mini").map(|l| l.context),
            Some(1_047_576)
        );
        assert_eq!(c.get("my-model").map(|l| l.context), Some(1000));
        assert_eq!(c.get("text-embedding-3-small").unwrap().max_output, None);
        assert_eq!(c.get("llama-local"), None);
        assert_eq!(c.get(""), None);
        assert_eq!(c.get(&"x-".repeat(1000)), None);
        assert!(c.len() > 60, "{}", c.len());
    }
}
