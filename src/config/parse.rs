//! Parsers of setting values that are more than a `FromStr`: durations in the Go
//! service's forms, libpq DSNs, log levels, issuer URLs.

use std::{str::FromStr, time::Duration};

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// `LOG_LEVEL`: a level in any case (the Go service's `warning` is `warn`), or a
/// tracing filter with directives (`spacet=debug,sqlx=warn`). A lone word that is
/// not a level is refused: tracing would read it as a target and log nothing else.
pub(crate) fn parse_log_level(value: &str) -> Result<String, String> {
    let value = value.trim();
    let lower = value.to_ascii_lowercase();
    let level = match lower.as_str() {
        "warning" => "warn".to_string(),
        "error" | "warn" | "info" | "debug" | "trace" | "off" => lower,
        _ if !value.contains(['=', ',', '[']) => {
            return Err(format!(
                "{value:?} is not a level (error, warn, warning, info, debug, trace, off) nor a filter such as spacet=debug,sqlx=warn"
            ))
        }
        _ => value.to_string(),
    };
    tracing_subscriber::EnvFilter::try_new(&level)
        .map_err(|e| format!("{value:?} is not a valid tracing filter: {e}"))?;
    Ok(level)
}

/// Parses `90s`, `30m`, `1h30m`, `1.5h`, `250ms`, or a bare number of `bare_unit`s
/// (the Go service's form). Zero, negative, fractional overflow and garbage are errors.
pub fn parse_duration(input: &str, bare_unit: Duration) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let seconds = if let Ok(n) = s.parse::<f64>() {
        n * bare_unit.as_secs_f64()
    } else {
        let mut total = 0.0;
        let mut rest = s;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or("missing unit (use ms, s, m, h or d)")?;
            if number_len == 0 {
                return Err("expected a number such as 90s, 30m or 1h".into());
            }
            let number: f64 = rest[..number_len].parse().map_err(|_| "bad number")?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = match rest[..unit_len].trim() {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" | "sec" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                other => return Err(format!("unknown unit {other:?} (use ms, s, m, h or d)")),
            };
            total += number * unit;
            rest = &rest[unit_len..];
        }
        total
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err("must be greater than zero".into());
    }
    let duration = Duration::try_from_secs_f64(seconds).map_err(|_| "too large".to_string())?;
    if duration < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    if duration > Duration::from_secs(10 * 365 * 86400) {
        return Err("too large".into());
    }
    Ok(duration)
}

/// Parses a libpq key/value DSN (`host=... port=... user=... dbname=... password=...
/// sslmode=...`) or a `postgres://` URL.
pub fn parse_dsn(dsn: &str) -> Result<PgConnectOptions, String> {
    let dsn = dsn.trim();
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        return PgConnectOptions::from_str(dsn)
            .map_err(|e| format!("not a valid postgres:// URL: {e}"));
    }
    let mut options = PgConnectOptions::new_without_pgpass()
        .host("localhost")
        .port(5432);
    for (key, value) in split_key_values(dsn)? {
        options = match key.as_str() {
            "host" => options.host(&value),
            "port" => options.port(value.parse().map_err(|_| format!("port {value:?} is not a number"))?),
            "user" => options.username(&value),
            "password" => options.password(&value),
            "dbname" => options.database(&value),
            "application_name" => options.application_name(&value),
            "sslmode" => options.ssl_mode(
                PgSslMode::from_str(&value).map_err(|_| format!("sslmode {value:?} is not a libpq sslmode"))?,
            ),
            "sslrootcert" => options.ssl_root_cert(&value),
            "connect_timeout" => options,
            other => {
                return Err(format!(
                    "unknown key {other:?} (known: host, port, user, password, dbname, sslmode, sslrootcert, application_name, connect_timeout)"
                ))
            }
        };
    }
    Ok(options)
}

fn split_key_values(dsn: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("expected key=value, found {key:?} without a value"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quote in the value of {key:?}")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// An issuer URL we fetch keys from: https, or http to this machine.
pub(super) fn issuer_url_allowed(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return url.starts_with("https://") && url.len() > "https://".len();
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_go_and_human_forms() {
        let h = Duration::from_secs(3600);
        assert_eq!(parse_duration("90s", h), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m", h), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m", h), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h", h), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2", h), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0.5", h), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("250ms", h), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn zero_negative_and_garbage_durations_are_errors_not_panics() {
        let s = Duration::from_secs(1);
        for bad in [
            "0",
            "0s",
            "-1",
            "-5m",
            "abc",
            "5 parsecs",
            "",
            "1e400",
            "NaN",
            "inf",
            "s",
            "0.0000000001",
        ] {
            assert!(
                parse_duration(bad, s).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn libpq_key_value_dsn_is_understood() {
        let o = parse_dsn("host=db.internal port=6543 user=postgres dbname=spacet-db password='p w' sslmode=disable")
            .unwrap();
        assert_eq!(o.get_host(), "db.internal");
        assert_eq!(o.get_port(), 6543);
        assert_eq!(o.get_username(), "postgres");
        assert_eq!(o.get_database(), Some("spacet-db"));
        assert!(parse_dsn("host=x bogus=1").unwrap_err().contains("bogus"));
        assert!(parse_dsn("host").is_err());
        let url = parse_dsn("postgres://u:p@h:5433/d").unwrap();
        assert_eq!((url.get_host(), url.get_port()), ("h", 5433));
    }
}
