//! Human-friendly units in the config file: durations (`500ms`, `30s`, `2m`, `1h`)
//! and sizes (`32MiB`, `512KiB`, `10MB`, or a plain byte count).

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A duration written as a string such as `500ms`, `30s`, `2m`, `1h`, `1m30s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// A size in bytes written as `32MiB`, `512KiB`, `10MB`, `1GiB` or a plain integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

/// The longest duration a setting takes (3650 days): every deadline the
/// gateway computes from one stays far inside what its clocks can add.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Parses `500ms`, `30s`, `2m`, `1h`, `1m30s`, `1.5s`, `250us`, `7d`; at
/// most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let secs = match unit {
            "ns" => value / 1e9,
            "us" | "µs" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            _ => return None,
        };
        total += secs;
    }
    if !total.is_finite() || total < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(total)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
}

/// The largest size a setting takes (1 TiB): far past any body or buffer,
/// so no limit computed from one overflows.
pub const MAX_SIZE: u64 = 1 << 40;

/// Parses `32MiB`, `512KiB`, `10MB`, `1GiB`, `100B`, `4096`; at most [`MAX_SIZE`].
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let value: f64 = s[..num_end].parse().ok()?;
    let mult: u64 = match s[num_end..].trim() {
        "" | "B" | "b" => 1,
        "KB" | "kB" | "K" | "k" => 1_000,
        "MB" | "M" => 1_000_000,
        "GB" | "G" => 1_000_000_000,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        _ => return None,
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > MAX_SIZE as f64 {
        return None;
    }
    Some(bytes as u64)
}

/// Formats a duration the way the config file writes it (`30s`, `500ms`, `2m`).
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Formats a byte count as `32MiB`, `512KiB` or `N B`.
pub fn fmt_size(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

struct DurVisitor;
impl serde::de::Visitor<'_> for DurVisitor {
    type Value = Dur;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as \"500ms\", \"30s\" or \"2m\"")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
        parse_duration(v).map(Dur).ok_or_else(|| {
            E::custom(format!(
                "invalid duration {v:?}: expected a duration such as \"500ms\", \"30s\" or \"2m\", at most 3650d"
            ))
        })
    }
}
impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(DurVisitor)
    }
}

struct SizeVisitor;
impl serde::de::Visitor<'_> for SizeVisitor {
    type Value = Size;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size such as \"32MiB\", \"512KiB\" or a byte count")
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
        Ok(Size(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
        u64::try_from(v)
            .map(Size)
            .map_err(|_| E::custom("a size cannot be negative"))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
        parse_size(v).map(Size).ok_or_else(|| {
            E::custom(format!(
                "invalid size {v:?}: expected a size such as \"32MiB\", \"512KiB\" or a byte count"
            ))
        })
    }
}
impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

/// Deserializes a string, accepting a YAML number or bool as its text (keys and
/// tokens that happen to look numeric after `${VAR}` expansion stay strings).
pub fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_past_ten_years_are_refused_not_a_panic() {
        assert_eq!(parse_duration("3650d"), Some(MAX_DURATION));
        assert_eq!(parse_duration("3651d"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
        assert_eq!(parse_duration(&format!("{}s", f64::MAX)), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32MiB"), Some(32 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("1024GiB"), Some(MAX_SIZE));
        assert_eq!(parse_size("1025GiB"), None);
        assert_eq!(parse_size("99999999999999999999999999GiB"), None);
        assert_eq!(fmt_size(32 << 20), "32MiB");
    }
}
