//! Listing rockets: sorted by any of the keys, filtered, and paged with a
//! keyset cursor on (key, channel), so a page boundary never skips or repeats a
//! rocket whose key does not change meanwhile.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use tonic_types::FieldViolation;
use uuid::Uuid;

use super::state::Status;
use crate::proto;

/// Page size when the request gives none.
pub const DEFAULT_LIMIT: i64 = 20;
/// Largest page; larger requests are lowered to it.
pub const MAX_LIMIT: i64 = 100;

/// What rockets can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Channel,
    Type,
    Speed,
    Mission,
    Status,
    LaunchedAt,
    UpdatedAt,
}

impl Sort {
    const ALL: [Sort; 7] = [
        Sort::Channel,
        Sort::Type,
        Sort::Speed,
        Sort::Mission,
        Sort::Status,
        Sort::LaunchedAt,
        Sort::UpdatedAt,
    ];

    /// The name in requests and cursors.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Channel => "channel",
            Sort::Type => "type",
            Sort::Speed => "speed",
            Sort::Mission => "mission",
            Sort::Status => "status",
            Sort::LaunchedAt => "launchedAt",
            Sort::UpdatedAt => "updatedAt",
        }
    }

    /// Parses a name written by [`Sort::as_str`].
    pub fn parse(name: &str) -> Option<Sort> {
        Sort::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Every sort, in the order of `RocketSort`.
    pub fn all() -> [Sort; 7] {
        Sort::ALL
    }

    /// A cursor's key rewritten as the store writes a rocket's key, or `None` when
    /// it is no value of this sort's SQL expression: the key is cast to the
    /// expression's type in SQL ([`super::store`]), so anything the cast could
    /// refuse is refused here first.
    fn canonical_key(self, raw: &str) -> Option<String> {
        match self {
            Sort::Channel => Uuid::try_parse(raw).ok().map(|c| c.to_string()),
            // PostgreSQL text cannot hold NUL; any other text compares.
            Sort::Type | Sort::Mission | Sort::Status => {
                (!raw.contains('\0')).then(|| raw.to_string())
            }
            Sort::Speed => raw.parse::<i64>().ok().map(|n| n.to_string()),
            Sort::LaunchedAt if raw == "-infinity" => Some(raw.to_string()),
            Sort::LaunchedAt | Sort::UpdatedAt => DateTime::parse_from_rfc3339(raw)
                .ok()
                // Through microseconds: a leap second becomes the next second.
                .and_then(|t| DateTime::from_timestamp_micros(t.timestamp_micros()))
                .filter(|t| (1..=9999).contains(&t.year()))
                .map(time),
        }
    }
}

/// A time as a cursor key: RFC 3339 in UTC with microseconds, as PostgreSQL stores it.
pub(super) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Position after the last rocket of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub sort: Sort,
    pub descending: bool,
    pub key: String,
    pub channel: Uuid,
}

impl SortKey {
    /// Opaque, URL-safe encoding. The sort and order are in it, so that a cursor is
    /// never used with another sort.
    pub fn encode(&self) -> String {
        let order = if self.descending { "desc" } else { "asc" };
        URL_SAFE_NO_PAD.encode(format!(
            "r1|{}|{order}|{}|{}",
            self.sort.as_str(),
            self.channel,
            self.key
        ))
    }

    /// Decodes [`SortKey::encode`]'s text, checked whole: the key must be a value
    /// of the cursor's own sort (see [`Sort::canonical_key`]).
    pub fn decode(raw: &str) -> Option<SortKey> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw.trim()).ok()?).ok()?;
        let mut parts = text.splitn(5, '|');
        if parts.next()? != "r1" {
            return None;
        }
        let sort = Sort::parse(parts.next()?)?;
        let descending = match parts.next()? {
            "asc" => false,
            "desc" => true,
            _ => return None,
        };
        let channel = Uuid::try_parse(parts.next()?).ok()?;
        let key = sort.canonical_key(parts.next()?)?;
        Some(SortKey {
            sort,
            descending,
            key,
            channel,
        })
    }
}

/// A parsed ListRockets request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub sort: Sort,
    pub descending: bool,
    pub status: Option<Status>,
    pub rocket_type: Option<String>,
    pub mission: Option<String>,
    /// Only this rocket (used by WatchRockets' snapshots).
    pub channel: Option<Uuid>,
    /// `None`: every rocket (internal callers only).
    pub limit: Option<i64>,
    pub after: Option<SortKey>,
}

impl ListQuery {
    /// Every rocket of one channel or all channels, in channel order.
    pub fn all(channel: Option<Uuid>) -> ListQuery {
        ListQuery {
            sort: Sort::Channel,
            descending: false,
            status: None,
            rocket_type: None,
            mission: None,
            channel,
            limit: None,
            after: None,
        }
    }

    /// Parses a request, naming every invalid field.
    pub fn parse(req: &proto::ListRocketsRequest) -> Result<ListQuery, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let mut bad = |field: &str, problem: String| {
            violations.push(FieldViolation::new(field, problem));
        };
        use proto::{RocketSort as S, RocketStatus as R, SortOrder as O};
        let sort = match S::try_from(req.sort) {
            Ok(S::Unspecified | S::Channel) => Sort::Channel,
            Ok(S::Type) => Sort::Type,
            Ok(S::Speed) => Sort::Speed,
            Ok(S::Mission) => Sort::Mission,
            Ok(S::Status) => Sort::Status,
            Ok(S::LaunchedAt) => Sort::LaunchedAt,
            Ok(S::UpdatedAt) => Sort::UpdatedAt,
            Err(_) => {
                bad("sort", format!("{} is not a RocketSort", req.sort));
                Sort::Channel
            }
        };
        let descending = match O::try_from(req.order) {
            Ok(O::Unspecified | O::Asc) => false,
            Ok(O::Desc) => true,
            Err(_) => {
                bad("order", format!("{} is not a SortOrder", req.order));
                false
            }
        };
        let status = match R::try_from(req.status) {
            Ok(R::Unspecified) => None,
            Ok(R::Unknown) => Some(Status::Unknown),
            Ok(R::Launched) => Some(Status::Launched),
            Ok(R::Exploded) => Some(Status::Exploded),
            Err(_) => {
                bad("status", format!("{} is not a RocketStatus", req.status));
                None
            }
        };
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            l if l < 0 => {
                bad("limit", "must not be negative".into());
                DEFAULT_LIMIT
            }
            l => i64::from(l).min(MAX_LIMIT),
        };
        let after = match req.cursor.trim() {
            "" => None,
            raw => match SortKey::decode(raw) {
                Some(key) if key.sort == sort && key.descending == descending => Some(key),
                Some(_) => {
                    bad(
                        "cursor",
                        "belongs to another sort or order: repeat the sort and order of the request that returned it".into(),
                    );
                    None
                }
                None => {
                    bad("cursor", "is not a cursor returned by ListRockets".into());
                    None
                }
            },
        };
        // Compared with stored text, which cannot hold NUL (PostgreSQL refuses it).
        let mut filter = |field: &str, raw: &str| {
            let value = raw.trim();
            if value.contains('\0') {
                bad(field, "must not contain NUL characters".into());
                None
            } else {
                Some(value.to_string()).filter(|v| !v.is_empty())
            }
        };
        let rocket_type = filter("type", &req.r#type);
        let mission = filter("mission", &req.mission);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(ListQuery {
            sort,
            descending,
            status,
            rocket_type,
            mission,
            channel: None,
            limit: Some(limit),
            after,
        })
    }

    /// The cursor of the next page, from the last rocket's key.
    pub fn next_cursor(&self, key: Option<SortKey>) -> Option<String> {
        key.map(|mut key| {
            key.descending = self.descending;
            key.encode()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_with_any_key_text() {
        let key = SortKey {
            sort: Sort::Mission,
            descending: true,
            key: "A|B|C".into(),
            channel: Uuid::now_v7(),
        };
        assert_eq!(SortKey::decode(&key.encode()), Some(key));
        for bad in ["", "xyz", "!!!", &URL_SAFE_NO_PAD.encode("r1|speed|up|x|1")] {
            assert_eq!(SortKey::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_key_must_be_a_value_of_its_sort() {
        let decode = |sort: &str, key: &str| {
            SortKey::decode(&URL_SAFE_NO_PAD.encode(format!("r1|{sort}|asc|{}|{key}", Uuid::nil())))
                .map(|k| k.key)
        };
        for (sort, key) in [
            ("launchedAt", "100"),
            ("updatedAt", "-infinity"),
            ("launchedAt", "infinity"),
            ("launchedAt", "now"),
            ("updatedAt", "0000-06-01T00:00:00Z"),
            ("updatedAt", "0001-01-01T00:30:00+01:00"),
            ("updatedAt", "+262142-12-31T00:00:00Z"),
            ("speed", "2022-02-02T18:00:00Z"),
            ("speed", " 5"),
            ("speed", "99999999999999999999"),
            ("channel", "5"),
            ("type", "a\0b"),
        ] {
            assert_eq!(decode(sort, key), None, "{sort} {key:?}");
        }
        for (sort, key, canonical) in [
            ("launchedAt", "-infinity", "-infinity"),
            (
                "updatedAt",
                "2022-02-02T19:39:05.86337+01:00",
                "2022-02-02T18:39:05.863370Z",
            ),
            (
                "updatedAt",
                "9999-12-31T23:59:59Z",
                "9999-12-31T23:59:59.000000Z",
            ),
            ("speed", "+5", "5"),
            ("speed", "-9223372036854775808", "-9223372036854775808"),
            ("mission", "A|B", "A|B"),
            ("status", "", ""),
        ] {
            assert_eq!(
                decode(sort, key).as_deref(),
                Some(canonical),
                "{sort} {key:?}"
            );
        }
    }

    #[test]
    fn bad_fields_are_all_named() {
        let req = proto::ListRocketsRequest {
            // Numbers no enum value has.
            sort: 99,
            order: 7,
            status: -1,
            limit: -1,
            cursor: "nope".into(),
            r#type: "Falcon\09".into(),
            mission: "\0".into(),
        };
        let mut fields: Vec<String> = ListQuery::parse(&req)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        fields.sort();
        assert_eq!(
            fields,
            ["cursor", "limit", "mission", "order", "sort", "status", "type"]
        );
    }

    #[test]
    fn a_cursor_only_continues_its_own_sort() {
        let key = SortKey {
            sort: Sort::Speed,
            descending: false,
            key: "5".into(),
            channel: Uuid::nil(),
        };
        let mut req = proto::ListRocketsRequest {
            sort: proto::RocketSort::Speed as i32,
            cursor: key.encode(),
            ..Default::default()
        };
        assert!(ListQuery::parse(&req).unwrap().after.is_some());
        req.order = proto::SortOrder::Desc as i32;
        assert!(ListQuery::parse(&req).is_err());
    }
}
