//! The one parser of sizes and the one parser of durations, for every option, setting and
//! SQL interval literal that takes one.
//!
//! - Sizes ([`parse_bytes`]): a number (decimals allowed) and an optional unit, `B`, `K`,
//!   `KB`, `KiB`, `M`, `MB`, `MiB`, `G`, `GB`, `GiB`, case-insensitive; every unit is a
//!   power of 1024. `268435456`, `256MiB`, `1.5GiB`. At least one byte.
//! - Durations ([`parse_duration_ms`], [`parse_duration`]): a whole number and a unit, with
//!   or without a space: `ms`, `s`, `m`, `h`, `d`, or the words `millisecond`, `second`,
//!   `minute`, `hour`, `day` (singular or plural, any case; `sec`, `min` too). `250ms`,
//!   `5s`, `2 minutes`, `1 DAY`.
//! - SQL interval literals ([`interval_ms`]): `INTERVAL 'n' UNIT`, `INTERVAL 'n unit'` or
//!   `INTERVAL 'n'` (seconds), read by the same duration rules.

use std::time::Duration;

use datafusion::sql::sqlparser::ast::Expr as SqlExpr;

/// A size in bytes (see the module docs); `None` for anything else, zero included.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * scale;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// A duration in milliseconds (see the module docs), negative values allowed (callers
/// that need a positive one check); `None` when the text is not a duration.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits_from = usize::from(t.starts_with('-'));
    let split = t[digits_from..].find(|c: char| !c.is_ascii_digit()).map(|i| i + digits_from)?;
    let (amount, unit) = t.split_at(split);
    let amount: i64 = amount.parse().ok()?;
    amount.checked_mul(unit_ms(unit.trim())?)
}

/// A duration that cannot be negative (options such as `idle_timeout = '10s'`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let ms = u64::try_from(parse_duration_ms(text)?).ok()?;
    Some(Duration::from_millis(ms))
}

/// Milliseconds per unit.
fn unit_ms(unit: &str) -> Option<i64> {
    let unit = unit.to_ascii_lowercase();
    let singular = if unit.len() > 1 && unit.ends_with('s') && unit != "ms" { &unit[..unit.len() - 1] } else { &unit };
    Some(match singular {
        "ms" | "millisecond" => 1,
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        "d" | "day" => 86_400_000,
        _ => return None,
    })
}

/// The length of a literal `INTERVAL 'n' UNIT`, `INTERVAL 'n unit'` or `INTERVAL 'n'`
/// (seconds) in milliseconds; `None` for anything else (windows leave that to the window
/// functions' own checks; watermarks reject it).
pub fn interval_ms(expr: &SqlExpr) -> Option<i64> {
    let SqlExpr::Interval(interval) = expr else { return None };
    let text = interval.value.to_string();
    let text = text.trim_matches('\'').trim();
    match &interval.leading_field {
        Some(field) => parse_duration_ms(&format!("{text} {field}")),
        None if text.contains(|c: char| c.is_ascii_alphabetic()) => parse_duration_ms(text),
        None => parse_duration_ms(&format!("{text} s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("256MiB"), Some(256 << 20));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("1.5gib"), Some(3 << 29));
        assert_eq!(parse_bytes("512 KB"), Some(512 << 10));
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        for bad in ["", "0", "1TB", "MiB", "-1", "1.2.3", ".5G", "12 apples"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2 days"), Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_duration("3 Minutes"), Some(Duration::from_secs(180)));
        assert_eq!(parse_duration_ms("-5 SECOND"), Some(-5_000));
        for bad in ["", "5", "s", "5 fortnights", "-5s", "1.5s", "99999999999999999999ms"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn interval_literals() {
        use datafusion::sql::sqlparser::parser::Parser;
        let ms = |sql: &str| {
            let expr = Parser::new(&kiln_contracts::dialect::KilnDialect::default())
                .try_with_sql(sql)
                .and_then(|mut p| p.parse_expr())
                .ok()?;
            interval_ms(&expr)
        };
        assert_eq!(ms("INTERVAL '5' SECOND"), Some(5_000));
        assert_eq!(ms("INTERVAL '10 minutes'"), Some(600_000));
        assert_eq!(ms("INTERVAL '3'"), Some(3_000));
        assert_eq!(ms("INTERVAL '1' DAY"), Some(86_400_000));
        assert_eq!(ms("INTERVAL '250' MILLISECOND"), Some(250));
        assert_eq!(ms("INTERVAL '1' MONTH"), None);
        assert_eq!(ms("5"), None);
    }
}
