//! Sizes and durations as people type them (`50G`, `30m`): one parser for the command
//! line, the configuration file and the tools.

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Parses a size such as `256M`, `1.5G`, `64K` or `1000` (K, M, G are binary: 1024-based;
/// an optional trailing `B` or `iB` is accepted).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_uppercase();
    let t = t
        .strip_suffix("IB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], KIB),
        'M' => (&t[..t.len() - 1], MIB),
        'G' => (&t[..t.len() - 1], 1 << 30),
        'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    if !(f.is_finite() && f >= 0.0) {
        return None;
    }
    let v = f * mult as f64;
    (v < u64::MAX as f64).then_some(v as u64)
}

/// Parses a duration such as `30s`, `30m`, `6h`, `1d`, `2w` or a bare number of seconds;
/// decimals are allowed (`1.5h`). `None` for anything else, zero included.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let t = s.trim().to_ascii_lowercase();
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t.as_str(), "s"),
    };
    let mult = match unit {
        "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        "w" | "week" | "weeks" => 7.0 * 86400.0,
        _ => return None,
    };
    let n: f64 = num.trim().parse().ok()?;
    let secs = n * mult;
    (secs.is_finite() && secs > 0.0 && secs < 1e12)
        .then(|| std::time::Duration::from_secs_f64(secs))
}

/// A duration in its largest unit that divides it (`1d`, `6h`, `30m`, `90s`): what
/// [`parse_duration`] reads back, for settings shown to people.
pub fn compact_duration(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A span for people, in its largest whole unit: `3 days`, `1 hour`, `12 minutes`.
pub fn spoken_duration(secs: i64) -> String {
    let (n, unit) = match secs {
        s if s >= 86_400 => (s / 86_400, "day"),
        s if s >= 3600 => (s / 3600, "hour"),
        s if s >= 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The civil date (year, month 1-12, day 1-31) of Unix day `days` (proleptic
/// Gregorian; H. Hinnant's civil_from_days).
pub fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub fn utc(t: i64) -> String {
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil(t.div_euclid(86400));
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("6h"), Some(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        for bad in ["", "0", "0s", "-1m", "5x", "m", "1e400s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn spans() {
        assert_eq!(compact_duration(86_400), "1d");
        assert_eq!(compact_duration(6 * 3600), "6h");
        assert_eq!(compact_duration(1800), "30m");
        assert_eq!(compact_duration(90), "90s");
        for s in [86_400u64, 21_600, 1800, 90, 3 * 86_400 + 3600] {
            let back = parse_duration(&compact_duration(s)).map(|d| d.as_secs());
            assert_eq!(back, Some(s), "{s}");
        }
        assert_eq!(spoken_duration(1), "1 second");
        assert_eq!(spoken_duration(59), "59 seconds");
        assert_eq!(spoken_duration(3600), "1 hour");
        assert_eq!(spoken_duration(3 * 86_400 + 5), "3 days");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50G"), Some(50 << 30));
        assert_eq!(parse_size("1.5M"), Some(3 << 19));
        assert_eq!(parse_size("nope"), None);
    }
}
