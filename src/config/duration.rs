//! Go's duration syntax (`time.ParseDuration` / `Duration.String`), which every duration in
//! kube-proxy's flags and `KubeProxyConfiguration` uses: `30s`, `1m30s`, `1.5h`, `300ms`, `0`.
//! Negative durations parse (Go accepts them) so that validation can name the field.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration as Go writes and reads it. Negative values are kept so validation can reject
/// them with the field's name instead of failing inside the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration {
    nanos: i128,
}

/// A string that is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration (Go syntax: 30s, 1m30s, 1.5h, 300ms, 0)")]
pub struct ParseError(pub String);

const UNITS: [(&str, i128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Go's limit: durations are an int64 of nanoseconds.
const MAX_NANOS: i128 = i64::MAX as i128;

impl GoDuration {
    /// Zero.
    pub const ZERO: GoDuration = GoDuration { nanos: 0 };

    /// From a `std` duration (saturating at Go's maximum).
    pub fn from_std(d: Duration) -> Self {
        GoDuration { nanos: (d.as_nanos() as i128).min(MAX_NANOS) }
    }

    /// Whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        GoDuration { nanos: secs as i128 * 1_000_000_000 }
    }

    /// Whether it is zero (kube-proxy's "use the default" for non-pointer fields).
    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// Whether it is below zero.
    pub fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// As a `std` duration (`None` when negative).
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.nanos).ok().map(Duration::from_nanos)
    }

    /// Parses Go's syntax: an optional sign, then one or more `<decimal><unit>` pairs, or `0`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let err = || ParseError(text.to_string());
        let (negative, mut rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        if rest == "0" {
            return Ok(GoDuration::ZERO);
        }
        if rest.is_empty() {
            return Err(err());
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
            let (number, tail) = rest.split_at(number_len);
            let (unit, scale) = UNITS
                .iter()
                .filter(|(unit, _)| tail.starts_with(unit))
                .max_by_key(|(unit, _)| unit.len())
                .ok_or_else(err)?;
            total = total.checked_add(scaled(number, *scale).ok_or_else(err)?).ok_or_else(err)?;
            if total > MAX_NANOS {
                return Err(err());
            }
            rest = &tail[unit.len()..];
        }
        Ok(GoDuration { nanos: if negative { -total } else { total } })
    }
}

/// `number` (digits with at most one `.`) × `scale` nanoseconds, truncated like Go.
fn scaled(number: &str, scale: i128) -> Option<i128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut nanos = whole.checked_mul(scale)?;
    let mut unit = scale;
    for digit in fraction.chars().take(30) {
        unit /= 10;
        nanos = nanos.checked_add(i128::from(digit.to_digit(10)?) * unit)?;
    }
    Some(nanos)
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String`: `0s`, `1.5s`, `300ms`, `1m30s`, `24h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let n = self.nanos.unsigned_abs();
        if n == 0 {
            return f.write_str("0s");
        }
        if n < 1_000_000_000 {
            let (value, unit, scale) = match n {
                n if n < 1_000 => return write!(f, "{sign}{n}ns"),
                n if n < 1_000_000 => (n, "µs", 1_000),
                n => (n, "ms", 1_000_000),
            };
            return write!(f, "{sign}{}{unit}", decimal(value, scale));
        }
        let secs = decimal(n % 60_000_000_000, 1_000_000_000);
        let minutes = n / 60_000_000_000;
        match (minutes / 60, minutes % 60) {
            (0, 0) => write!(f, "{sign}{secs}s"),
            (0, m) => write!(f, "{sign}{m}m{secs}s"),
            (h, m) => write!(f, "{sign}{h}h{m}m{secs}s"),
        }
    }
}

/// `value / scale` with the fraction's trailing zeros removed (`1500, 1000` → `1.5`).
fn decimal(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let fraction = value % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl std::str::FromStr for GoDuration {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        GoDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> GoDuration {
        GoDuration::parse(text).unwrap()
    }

    #[test]
    fn parses_go_syntax() {
        assert_eq!(d("0"), GoDuration::ZERO);
        assert_eq!(d("0s"), GoDuration::ZERO);
        assert_eq!(d("30s"), GoDuration::from_secs(30));
        assert_eq!(d("1m30s"), GoDuration::from_secs(90));
        assert_eq!(d("1.5h"), GoDuration::from_secs(5400));
        assert_eq!(d("24h0m0s"), GoDuration::from_secs(86_400));
        assert_eq!(d("300ms").to_std(), Some(Duration::from_millis(300)));
        assert_eq!(d("2us").to_std(), Some(Duration::from_micros(2)));
        assert_eq!(d("2µs").to_std(), Some(Duration::from_micros(2)));
        assert_eq!(d(".5s").to_std(), Some(Duration::from_millis(500)));
        assert!(d("-1s").is_negative());
        assert_eq!(d("-1s").to_std(), None);
        for bad in ["", "30", "s", "1x", "1..5s", "1 s", "1s ", "-", "99999999999999h", "1.s.5"] {
            assert!(GoDuration::parse(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn prints_like_go() {
        for (text, want) in [
            ("0", "0s"),
            ("30s", "30s"),
            ("90s", "1m30s"),
            ("1h", "1h0m0s"),
            ("24h", "24h0m0s"),
            ("15m", "15m0s"),
            ("1.5s", "1.5s"),
            ("300ms", "300ms"),
            ("250us", "250µs"),
            ("12ns", "12ns"),
            ("-2s", "-2s"),
        ] {
            assert_eq!(d(text).to_string(), want, "{text}");
            assert_eq!(d(want), d(text), "{want} reads back");
        }
    }
}
