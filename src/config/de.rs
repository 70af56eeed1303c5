//! Reading the typed settings from the layers' text with serde, and the field
//! parsers the sections name in `#[serde(deserialize_with = "...")]`.
//!
//! A field reads the setting of its serde name (the flat key, `spacex_timeout`); a
//! field whose type is a struct (a section) reads that struct's fields the same
//! way. A value that does not parse is a [`ConfigError`] naming the setting.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use serde::{
    de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor},
    Deserialize, Deserializer,
};
use sqlx::postgres::PgConnectOptions;

use super::{parse, sources::Values, ConfigError};

impl de::Error for ConfigError {
    /// A problem of the value being read; [`Fields`] names its setting.
    fn custom<T: fmt::Display>(problem: T) -> ConfigError {
        ConfigError {
            setting: String::new(),
            problem: problem.to_string(),
        }
    }
}

/// A serde deserializer of one setting (`key`), or of a struct of settings.
pub(super) struct Reader<'a> {
    pub(super) values: &'a Values,
    pub(super) key: &'static str,
}

impl Reader<'_> {
    fn text(&self) -> Result<String, ConfigError> {
        self.values.text(self.key)
    }

    fn number<T: FromStr>(&self) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        let text = self.text()?;
        text.trim()
            .parse()
            .map_err(|e| de::Error::custom(format!("{text:?}: {e}")))
    }
}

macro_rules! numbers {
    ($($method:ident => $visit:ident($ty:ty)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
            visitor.$visit(self.number::<$ty>()?)
        }
    )*};
}

impl<'de> Deserializer<'de> for Reader<'_> {
    type Error = ConfigError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_string(self.text()?)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let text = self.text()?;
        match text.trim().to_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => visitor.visit_bool(true),
            "false" | "0" | "no" | "off" => visitor.visit_bool(false),
            _ => Err(de::Error::custom(format!(
                "{text:?} is not a boolean (true or false)"
            ))),
        }
    }

    numbers! {
        deserialize_i8 => visit_i8(i8),
        deserialize_i16 => visit_i16(i16),
        deserialize_i32 => visit_i32(i32),
        deserialize_i64 => visit_i64(i64),
        deserialize_u8 => visit_u8(u8),
        deserialize_u16 => visit_u16(u16),
        deserialize_u32 => visit_u32(u32),
        deserialize_u64 => visit_u64(u64),
        deserialize_f32 => visit_f32(f32),
        deserialize_f64 => visit_f64(f64),
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_map(Fields {
            values: self.values,
            fields: fields.iter(),
            current: "",
        })
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The fields of a struct of settings, each read by its name.
struct Fields<'a> {
    values: &'a Values,
    fields: std::slice::Iter<'static, &'static str>,
    current: &'static str,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = ConfigError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConfigError> {
        let Some(&field) = self.fields.next() else {
            return Ok(None);
        };
        self.current = field;
        seed.deserialize(field.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ConfigError> {
        let reader = Reader {
            values: self.values,
            key: self.current,
        };
        seed.deserialize(reader)
            .map_err(|error| self.values.attribute(error, self.current))
    }
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d)
}

/// Trimmed, and not empty.
pub(super) fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = text(d)?;
    if text.trim().is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(text.trim().to_string())
}

/// A path, not empty.
pub(super) fn non_empty_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    non_empty(d).map(PathBuf::from)
}

/// Trimmed; may be empty.
pub(super) fn trimmed<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(text(d)?.trim().to_string())
}

/// Trimmed; `None` when empty.
pub(super) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(trimmed(d)?).filter(|s| !s.is_empty()))
}

/// Empty: this build's version.
pub(super) fn version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let version = trimmed(d)?;
    Ok(if version.is_empty() {
        env!("CARGO_PKG_VERSION").to_string()
    } else {
        version
    })
}

/// A number greater than zero.
pub(super) fn positive<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialOrd + Default,
{
    let value = T::deserialize(d)?;
    if value <= T::default() {
        return Err(de::Error::custom("must be greater than zero"));
    }
    Ok(value)
}

/// Any `FromStr` value (an IP address), trimmed.
pub(super) fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let text = text(d)?;
    text.trim()
        .parse()
        .map_err(|e| de::Error::custom(format!("{text:?}: {e}")))
}

/// A port; `None` for 0 (off).
pub(super) fn port_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(Some(u16::deserialize(d)?).filter(|&port| port != 0))
}

/// Comma-separated, trimmed, empty items dropped.
pub(super) fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(text(d)?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect())
}

fn duration<'de, D: Deserializer<'de>>(d: D, bare_unit: Duration) -> Result<Duration, D::Error> {
    let text = text(d)?;
    parse::parse_duration(&text, bare_unit)
        .map_err(|problem| de::Error::custom(format!("{text:?}: {problem}")))
}

/// A duration; a bare number is seconds.
pub(super) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d, Duration::from_secs(1))
}

/// A duration; a bare number is hours.
pub(super) fn hours<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d, Duration::from_secs(3600))
}

/// A duration; a bare number is milliseconds.
pub(super) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d, Duration::from_millis(1))
}

/// A duration in seconds, or `None` for `0`, `0s` or empty (off).
pub(super) fn seconds_or_off<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    let text = text(d)?;
    if matches!(text.trim(), "0" | "0s" | "") {
        return Ok(None);
    }
    seconds(text.into_deserializer()).map(Some)
}

/// A log level or tracing filter ([`parse::parse_log_level`]).
pub(super) fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parse::parse_log_level(&non_empty(d)?).map_err(de::Error::custom)
}

/// An http(s) URL, without a trailing `/`.
pub(super) fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = non_empty(d)?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(de::Error::custom(format!("{url:?} is not an http(s) URL")));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A PostgreSQL DSN ([`parse::parse_dsn`]); `None` when empty.
pub(super) fn dsn<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<PgConnectOptions>>, D::Error> {
    let text = text(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse::parse_dsn(&text)
        .map(|options| Some(Box::new(options)))
        .map_err(de::Error::custom)
}
