//! Generated protobuf code, nothing else: conversions to and from domain types live
//! at the edges (`api::convert`) and, for the events, in `booking::events`.

#![allow(clippy::all, missing_docs)]

/// `google.api` (HTTP annotations).
pub mod google_api {
    include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
}

// The generated code reads and writes deprecated fields too.
#[allow(deprecated)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/spacet.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/spacet.v1.serde.rs"));
}

pub use generated::*;

/// Encoded descriptors of every proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spacet_descriptor.bin"));

/// `google.protobuf.Timestamp`, whose proto3 JSON is written as protojson and
/// grpc-gateway write it: RFC 3339 in UTC with `Z` and 0, 3, 6 or 9 fractional
/// digits (`pbjson_types` writes `+00:00`). Any RFC 3339 offset is read.
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fractions of a second, 0..=999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// The time as chrono's UTC time, when it is one (nanos in range).
    pub(crate) fn to_datetime(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        u32::try_from(self.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .and_then(|n| chrono::DateTime::from_timestamp(self.seconds, n))
    }
}

impl From<chrono::DateTime<chrono::Utc>> for Timestamp {
    fn from(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
        Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = self.to_datetime().ok_or_else(|| {
            serde::ser::Error::custom(format!(
                "timestamp out of range: {}s {}ns",
                self.seconds, self.nanos
            ))
        })?;
        serializer.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let t = chrono::DateTime::parse_from_rfc3339(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not an RFC 3339 timestamp: {e}"))
        })?;
        Ok(Timestamp::from(t.with_timezone(&chrono::Utc)))
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn timestamps_are_written_in_utc_with_z_and_read_with_any_offset() {
        let json = |s: i64, n: i32| {
            serde_json::to_string(&Timestamp {
                seconds: s,
                nanos: n,
            })
            .unwrap()
        };
        assert_eq!(json(1_767_225_600, 0), "\"2026-01-01T00:00:00Z\"");
        assert_eq!(
            json(1_767_225_600, 5_000_000),
            "\"2026-01-01T00:00:00.005Z\""
        );
        assert_eq!(
            json(1_767_225_600, 5_000),
            "\"2026-01-01T00:00:00.000005Z\""
        );
        assert_eq!(json(1_767_225_600, 5), "\"2026-01-01T00:00:00.000000005Z\"");
        let read = |s: &str| serde_json::from_str::<Timestamp>(s);
        assert_eq!(
            read("\"2026-01-01T02:00:00+02:00\"").unwrap(),
            Timestamp {
                seconds: 1_767_225_600,
                nanos: 0
            }
        );
        assert!(read("\"2026-01-01\"").is_err());
        assert!(read("12").is_err());
        assert!(serde_json::to_string(&Timestamp {
            seconds: 0,
            nanos: -1
        })
        .is_err());
    }
}
