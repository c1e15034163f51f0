//! Which requests `GET /admin/requests` and `switchyard requests` show.

use crate::config::glob_match;

/// A status to match: one code, a class (`4xx`; `ok` is `2xx`) or every
/// error (`errors`: 400 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Code(u16),
    /// The hundreds digit: 2 for `2xx`.
    Class(u16),
    Errors,
}

impl StatusFilter {
    /// `429`, `4xx`, `ok`, `errors`; `None` for anything else.
    pub fn parse(s: &str) -> Option<StatusFilter> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "ok" => return Some(StatusFilter::Class(2)),
            "errors" | "error" => return Some(StatusFilter::Errors),
            _ => {}
        }
        if let Some(d) = s.strip_suffix("xx") {
            return match d.parse::<u16>() {
                Ok(c @ 1..=5) => Some(StatusFilter::Class(c)),
                _ => None,
            };
        }
        match s.parse::<u16>() {
            Ok(c @ 100..=599) => Some(StatusFilter::Code(c)),
            _ => None,
        }
    }

    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusFilter::Code(c) => status == c,
            StatusFilter::Class(c) => status / 100 == c,
            StatusFilter::Errors => status >= 400,
        }
    }
}

/// What a listed request must be; empty: every request.
#[derive(Debug, Default, Clone)]
pub struct RequestFilter {
    pub client: Option<String>,
    /// A name or glob, matched against the model asked and the one served.
    pub model: Option<String>,
    pub status: Option<StatusFilter>,
    /// Ended at or after this time (ms since the epoch).
    pub since_ms: u64,
    /// Ended at or before this time.
    pub until_ms: Option<u64>,
}

impl RequestFilter {
    pub fn matches(
        &self,
        client: &str,
        model: &str,
        served: Option<&str>,
        status: u16,
        ts_ms: u64,
    ) -> bool {
        let model_ok = |p: &str| glob_match(p, model) || served.is_some_and(|s| glob_match(p, s));
        ts_ms >= self.since_ms
            && self.until_ms.is_none_or(|u| ts_ms <= u)
            && self.client.as_deref().is_none_or(|c| c == client)
            && self.model.as_deref().is_none_or(model_ok)
            && self.status.is_none_or(|s| s.matches(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_by_code_class_and_errors() {
        assert_eq!(StatusFilter::parse("429"), Some(StatusFilter::Code(429)));
        assert_eq!(StatusFilter::parse("4XX"), Some(StatusFilter::Class(4)));
        assert_eq!(StatusFilter::parse("ok"), Some(StatusFilter::Class(2)));
        assert_eq!(StatusFilter::parse("errors"), Some(StatusFilter::Errors));
        for bad in [
            "",
            "6xx",
            "0xx",
            "99",
            "600",
            "4x",
            "abc",
            "-1",
            "99999999999",
        ] {
            assert_eq!(StatusFilter::parse(bad), None, "{bad}");
        }
        assert!(StatusFilter::Class(4).matches(404));
        assert!(!StatusFilter::Class(4).matches(500));
        assert!(StatusFilter::Errors.matches(502) && StatusFilter::Errors.matches(400));
        assert!(!StatusFilter::Errors.matches(200));
    }

    #[test]
    fn every_field_narrows() {
        let f = RequestFilter {
            client: Some("team-a".into()),
            model: Some("gpt-4o*".into()),
            status: Some(StatusFilter::Errors),
            since_ms: 1_000,
            until_ms: Some(2_000),
        };
        assert!(f.matches("team-a", "gpt-4o-mini", None, 429, 1_500));
        assert!(f.matches("team-a", "alias", Some("gpt-4o"), 500, 1_500));
        assert!(!f.matches("team-b", "gpt-4o", None, 429, 1_500));
        assert!(!f.matches("team-a", "o3", None, 429, 1_500));
        assert!(!f.matches("team-a", "gpt-4o", None, 200, 1_500));
        assert!(!f.matches("team-a", "gpt-4o", None, 429, 999));
        assert!(!f.matches("team-a", "gpt-4o", None, 429, 2_001));
        assert!(RequestFilter::default().matches("-", "", None, 200, 0));
    }
}
