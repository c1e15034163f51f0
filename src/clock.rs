//! Wall-clock helpers shared by the key pool, the store, the admin API and the
//! logs: milliseconds since the epoch, and their UTC renderings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A coarse clock's reading in milliseconds: the kernel's last tick, read
/// without a hardware clock access (a few nanoseconds against tens).
fn coarse(id: nix::time::ClockId) -> Option<u64> {
    let t = nix::time::clock_gettime(id).ok()?;
    let (s, ns) = (
        u64::try_from(t.tv_sec()).ok()?,
        u64::try_from(t.tv_nsec()).ok()?,
    );
    Some(s * 1000 + ns / 1_000_000)
}

/// Milliseconds since the Unix epoch from the coarse clock: at most one
/// kernel tick (1–10 ms) behind [`now_ms`]. For the request path's windows
/// and cooldowns, which count seconds; never for latencies.
pub fn coarse_ms() -> u64 {
    coarse(nix::time::ClockId::CLOCK_REALTIME_COARSE).unwrap_or_else(now_ms)
}

/// Milliseconds on the coarse monotonic clock (ages such as an idle
/// connection's; not wall time, never going back).
pub fn coarse_mono_ms() -> u64 {
    static START: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    coarse(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .unwrap_or_else(|| START.elapsed().as_millis() as u64)
}

/// The current `Date` header value (`Fri, 04 Dec 2026 16:39:25 GMT`) to
/// `f`: made once a second per thread, from the coarse clock.
pub fn with_http_date<R>(f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let secs = coarse_ms() / 1000;
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        }
        f(text)
    })
}

/// `2026-11-22T14:03:12Z` for milliseconds since the epoch.
pub fn fmt_iso(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// (year, month, day) of a day number since 1970-01-01 (civil-from-days,
/// Howard Hinnant).
pub fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

/// `14:03:12` (UTC), with the date when not today.
pub fn fmt_clock(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let days = secs / 86_400;
    let today = now_ms() / 1000 / 86_400;
    if days == today {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(secs));
        format!("{} {h:02}:{m:02}:{s:02}", &date[..16])
    }
}

/// A wait for a log line: `2.5s`, or `250ms` under a second.
pub fn fmt_wait(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// How long this process has been up (counted from the first call: the
/// server calls it as it starts).
pub fn uptime() -> std::time::Duration {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    STARTED.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(fmt_iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_iso(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(fmt_iso(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn coarse_clocks_keep_up_with_the_precise_ones() {
        let (before, coarse, after) = (now_ms(), coarse_ms(), now_ms());
        assert!(
            coarse <= after && coarse + 20 >= before,
            "{before} {coarse} {after}"
        );
        let m = coarse_mono_ms();
        std::thread::sleep(Duration::from_millis(30));
        assert!(coarse_mono_ms() >= m + 10);
        let date = with_http_date(str::to_string);
        assert_eq!(date.len(), 29, "{date}");
        assert!(date.ends_with(" GMT") && httpdate::parse_http_date(&date).is_ok());
    }

    #[test]
    fn waits() {
        assert_eq!(fmt_wait(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_wait(Duration::from_millis(2500)), "2.5s");
    }
}
