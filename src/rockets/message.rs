//! A rocket's telemetry message. A request body becomes a [`Message`] through
//! [`Message::parse`], which names every problem at once; after that nothing is
//! re-checked.

use std::fmt;

use chrono::{DateTime, FixedOffset, SecondsFormat, SubsecRound, Utc};
use serde_json::{json, Map, Value};
use tonic_types::FieldViolation;
use uuid::Uuid;

/// Largest `launchSpeed` and `by`: keeps any realistic sum of them far from an
/// `int8` overflow, which would otherwise fail every later write of the rocket.
pub const MAX_SPEED: i64 = 1_000_000_000;
/// Longest rocket type, mission or explosion reason, in characters.
pub const MAX_TEXT: usize = 200;

/// The kinds of message, with their wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Launched,
    SpeedIncreased,
    SpeedDecreased,
    Exploded,
    MissionChanged,
}

impl MessageType {
    /// Every type, in the order the issue lists them.
    pub const ALL: [MessageType; 5] = [
        MessageType::Launched,
        MessageType::SpeedIncreased,
        MessageType::SpeedDecreased,
        MessageType::Exploded,
        MessageType::MissionChanged,
    ];

    /// The `messageType` on the wire (and in the database).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Launched => "RocketLaunched",
            MessageType::SpeedIncreased => "RocketSpeedIncreased",
            MessageType::SpeedDecreased => "RocketSpeedDecreased",
            MessageType::Exploded => "RocketExploded",
            MessageType::MissionChanged => "RocketMissionChanged",
        }
    }

    /// Parses a wire name (exact case).
    pub fn parse(name: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The fields of its `message` object.
    fn fields(self) -> &'static [&'static str] {
        match self {
            MessageType::Launched => &["type", "launchSpeed", "mission"],
            MessageType::SpeedIncreased | MessageType::SpeedDecreased => &["by"],
            MessageType::Exploded => &["reason"],
            MessageType::MissionChanged => &["newMission"],
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a message says, by type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Body {
    Launched {
        rocket_type: String,
        launch_speed: i64,
        mission: String,
    },
    SpeedIncreased {
        by: i64,
    },
    SpeedDecreased {
        by: i64,
    },
    Exploded {
        reason: String,
    },
    MissionChanged {
        new_mission: String,
    },
}

impl Body {
    /// The message type of this body.
    pub(crate) fn message_type(&self) -> MessageType {
        match self {
            Body::Launched { .. } => MessageType::Launched,
            Body::SpeedIncreased { .. } => MessageType::SpeedIncreased,
            Body::SpeedDecreased { .. } => MessageType::SpeedDecreased,
            Body::Exploded { .. } => MessageType::Exploded,
            Body::MissionChanged { .. } => MessageType::MissionChanged,
        }
    }

    /// The `message` object, as the wire has it.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Body::Launched {
                rocket_type,
                launch_speed,
                mission,
            } => json!({"type": rocket_type, "launchSpeed": launch_speed, "mission": mission}),
            Body::SpeedIncreased { by } | Body::SpeedDecreased { by } => json!({ "by": by }),
            Body::Exploded { reason } => json!({ "reason": reason }),
            Body::MissionChanged { new_mission } => json!({ "newMission": new_mission }),
        }
    }
}

/// A valid telemetry message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// The rocket's radio channel: identifies the rocket.
    pub channel: Uuid,
    /// Orders the messages of one channel: 1, 2, 3, …
    pub number: i64,
    /// `messageTime` as sent, offset and every fraction digit kept.
    pub sent_at: DateTime<FixedOffset>,
    pub body: Body,
}

impl Message {
    /// The message time as stored: UTC, truncated to the microseconds PostgreSQL keeps.
    pub fn time(&self) -> DateTime<Utc> {
        self.sent_at.with_timezone(&Utc).trunc_subsecs(6)
    }

    /// What makes two messages with the same channel and number the same message:
    /// type, payload and the instant of `messageTime` (to the nanosecond, in any
    /// offset). Stored with the message and compared on a duplicate.
    pub fn fingerprint(&self) -> Value {
        json!({
            "messageType": self.body.message_type().as_str(),
            "messageTime": self.sent_at.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::AutoSi, true),
            "message": self.body.to_json(),
        })
    }

    /// The wire form of the message (the tests' messages).
    #[cfg(test)]
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "metadata": {
                "channel": self.channel.to_string(),
                "messageNumber": self.number,
                "messageTime": self.sent_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                "messageType": self.body.message_type().as_str(),
            },
            "message": self.body.to_json(),
        })
    }

    /// Parses a request body, naming every problem (`metadata.channel`,
    /// `message.launchSpeed`, …). Unknown fields are refused, as everywhere in our
    /// API, so a typo never goes unnoticed.
    pub fn parse(body: &Value) -> Result<Message, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let Some(root) = body.as_object() else {
            v.add("body", "must be a JSON object with metadata and message");
            return Err(v.finish());
        };
        v.unknown_fields(root, "", &["metadata", "message"]);

        let metadata = v.object(root, "", "metadata");
        let (mut channel, mut number, mut sent_at, mut message_type) = (None, None, None, None);
        if let Some(metadata) = metadata {
            v.unknown_fields(
                metadata,
                "metadata.",
                &["channel", "messageNumber", "messageTime", "messageType"],
            );
            channel = v.string(metadata, "metadata.", "channel").and_then(|raw| {
                Uuid::try_parse(raw)
                    .map_err(|_| v.add("metadata.channel", format!("{raw:?} is not a UUID")))
                    .ok()
            });
            number = v
                .integer(metadata, "metadata.", "messageNumber")
                .and_then(|n| {
                    if n < 1 {
                        v.add("metadata.messageNumber", "must be 1 or more");
                        None
                    } else {
                        Some(n)
                    }
                });
            sent_at = v.string(metadata, "metadata.", "messageTime").and_then(|raw| {
                DateTime::parse_from_rfc3339(raw)
                    .map_err(|e| {
                        v.add(
                            "metadata.messageTime",
                            format!("{raw:?} is not an RFC 3339 time such as 2022-02-02T19:39:05.86337+01:00 ({e})"),
                        )
                    })
                    .ok()
            });
            message_type = v
                .string(metadata, "metadata.", "messageType")
                .and_then(|raw| {
                    MessageType::parse(raw)
                        .ok_or_else(|| {
                            v.add(
                                "metadata.messageType",
                                format!(
                                    "{raw:?} is not one of {}",
                                    MessageType::ALL.map(MessageType::as_str).join(", ")
                                ),
                            )
                        })
                        .ok()
                });
        }

        let message = v.object(root, "", "message");
        let body = match (message_type, message) {
            (Some(t), Some(message)) => {
                v.unknown_fields(message, "message.", t.fields());
                parse_body(&mut v, t, message)
            }
            _ => None,
        };

        match (channel, number, sent_at, body) {
            (Some(channel), Some(number), Some(sent_at), Some(body)) if v.is_empty() => {
                Ok(Message {
                    channel,
                    number,
                    sent_at,
                    body,
                })
            }
            _ => Err(v.finish()),
        }
    }
}

fn parse_body(v: &mut Violations, t: MessageType, m: &Map<String, Value>) -> Option<Body> {
    let p = "message.";
    match t {
        MessageType::Launched => {
            let rocket_type = v.text(m, p, "type");
            let launch_speed = v.speed(m, p, "launchSpeed");
            let mission = v.text(m, p, "mission");
            Some(Body::Launched {
                rocket_type: rocket_type?,
                launch_speed: launch_speed?,
                mission: mission?,
            })
        }
        MessageType::SpeedIncreased => v.speed(m, p, "by").map(|by| Body::SpeedIncreased { by }),
        MessageType::SpeedDecreased => v.speed(m, p, "by").map(|by| Body::SpeedDecreased { by }),
        MessageType::Exploded => v
            .text(m, p, "reason")
            .map(|reason| Body::Exploded { reason }),
        MessageType::MissionChanged => v
            .text(m, p, "newMission")
            .map(|new_mission| Body::MissionChanged { new_mission }),
    }
}

/// Most violations an answer names; the others are counted in one more.
pub const MAX_VIOLATIONS: usize = 20;

/// Collects field violations while the fields are read: the first
/// [`MAX_VIOLATIONS`], and how many more (a body with thousands of unknown
/// fields must not make an answer, or a log line, as large).
#[derive(Default)]
struct Violations {
    named: Vec<FieldViolation>,
    more: usize,
}

impl Violations {
    fn add(&mut self, field: &str, description: impl Into<String>) {
        if self.named.len() < MAX_VIOLATIONS {
            self.named.push(FieldViolation::new(field, description));
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    /// The violations named, then "and N more" when some were not.
    fn finish(mut self) -> Vec<FieldViolation> {
        if self.more > 0 {
            let more = self.more;
            self.named.push(FieldViolation::new(
                "body",
                format!("and {more} more violations"),
            ));
        }
        self.named
    }

    fn unknown_fields(&mut self, object: &Map<String, Value>, prefix: &str, known: &[&str]) {
        for key in object.keys().filter(|k| !known.contains(&k.as_str())) {
            self.add(
                &format!("{prefix}{key}"),
                format!("unknown field (expected {})", known.join(", ")),
            );
        }
    }

    /// A present, non-null field, or a "required" violation.
    fn required<'a>(
        &mut self,
        object: &'a Map<String, Value>,
        prefix: &str,
        name: &str,
    ) -> Option<&'a Value> {
        match object.get(name) {
            None | Some(Value::Null) => {
                self.add(&format!("{prefix}{name}"), "is required");
                None
            }
            Some(value) => Some(value),
        }
    }

    fn object<'a>(
        &mut self,
        object: &'a Map<String, Value>,
        prefix: &str,
        name: &str,
    ) -> Option<&'a Map<String, Value>> {
        let value = self.required(object, prefix, name)?;
        let object = value.as_object();
        if object.is_none() {
            self.add(
                &format!("{prefix}{name}"),
                format!("must be an object, not {}", kind(value)),
            );
        }
        object
    }

    fn string<'a>(
        &mut self,
        object: &'a Map<String, Value>,
        prefix: &str,
        name: &str,
    ) -> Option<&'a str> {
        let value = self.required(object, prefix, name)?;
        let text = value.as_str();
        if text.is_none() {
            self.add(
                &format!("{prefix}{name}"),
                format!("must be a string, not {}", kind(value)),
            );
        }
        text
    }

    /// A non-blank string without control characters, at most [`MAX_TEXT`] long.
    fn text(&mut self, object: &Map<String, Value>, prefix: &str, name: &str) -> Option<String> {
        let text = self.string(object, prefix, name)?;
        let field = format!("{prefix}{name}");
        if text.trim().is_empty() {
            self.add(&field, "must not be blank");
            None
        } else if text.chars().any(char::is_control) {
            self.add(&field, "must not contain control characters");
            None
        } else if text.chars().count() > MAX_TEXT {
            self.add(&field, format!("must be at most {MAX_TEXT} characters"));
            None
        } else {
            Some(text.to_string())
        }
    }

    /// A JSON integer (not a string, not a fraction).
    fn integer(&mut self, object: &Map<String, Value>, prefix: &str, name: &str) -> Option<i64> {
        let value = self.required(object, prefix, name)?;
        let field = format!("{prefix}{name}");
        match value {
            Value::Number(n) => match n.as_i64() {
                Some(i) => Some(i),
                None if n.as_u64().is_some() => {
                    self.add(&field, "is too large");
                    None
                }
                None => {
                    self.add(&field, format!("must be an integer, not {n}"));
                    None
                }
            },
            other => {
                self.add(&field, format!("must be an integer, not {}", kind(other)));
                None
            }
        }
    }

    /// An integer from 0 to [`MAX_SPEED`].
    fn speed(&mut self, object: &Map<String, Value>, prefix: &str, name: &str) -> Option<i64> {
        let n = self.integer(object, prefix, name)?;
        if !(0..=MAX_SPEED).contains(&n) {
            self.add(
                &format!("{prefix}{name}"),
                format!("must be from 0 to {MAX_SPEED}"),
            );
            return None;
        }
        Some(n)
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launched() -> Value {
        json!({
            "metadata": {
                "channel": "193270a9-c9cf-404a-8f83-838e71d9ae67",
                "messageNumber": 1,
                "messageTime": "2022-02-02T19:39:05.86337+01:00",
                "messageType": "RocketLaunched"
            },
            "message": {"type": "Falcon-9", "launchSpeed": 500, "mission": "ARTEMIS"}
        })
    }

    fn fields(body: Value) -> Vec<String> {
        let mut fields: Vec<String> = Message::parse(&body)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        fields.sort();
        fields
    }

    #[test]
    fn at_most_twenty_violations_are_named_and_the_rest_counted() {
        let mut body = launched();
        for i in 0..100 {
            body["message"][format!("extra{i}")] = json!(i);
        }
        let violations = Message::parse(&body).unwrap_err();
        assert_eq!(violations.len(), MAX_VIOLATIONS + 1);
        let last = violations.last().unwrap();
        assert_eq!(last.description, "and 80 more violations");
    }

    #[test]
    fn the_issue_example_parses() {
        let m = Message::parse(&launched()).unwrap();
        assert_eq!(m.number, 1);
        assert_eq!(
            m.channel.to_string(),
            "193270a9-c9cf-404a-8f83-838e71d9ae67"
        );
        assert_eq!(m.time().to_rfc3339(), "2022-02-02T18:39:05.863370+00:00");
        assert_eq!(
            m.body,
            Body::Launched {
                rocket_type: "Falcon-9".into(),
                launch_speed: 500,
                mission: "ARTEMIS".into()
            }
        );
        assert_eq!(Message::parse(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn any_fraction_digits_and_any_offset_are_accepted() {
        for (raw, utc) in [
            ("2022-02-02T19:39:05Z", "2022-02-02T19:39:05+00:00"),
            (
                "2022-02-02T19:39:05.1-03:30",
                "2022-02-02T23:09:05.100+00:00",
            ),
            (
                "2022-02-02t19:39:05.123456789123+14:00",
                "2022-02-02T05:39:05.123456+00:00",
            ),
        ] {
            let mut body = launched();
            body["metadata"]["messageTime"] = json!(raw);
            let m = Message::parse(&body).unwrap_or_else(|e| panic!("{raw}: {e:?}"));
            assert_eq!(m.time().to_rfc3339(), utc, "{raw}");
        }
    }

    #[test]
    fn the_same_instant_in_another_offset_is_the_same_message() {
        let a = Message::parse(&launched()).unwrap();
        let mut body = launched();
        body["metadata"]["messageTime"] = json!("2022-02-02T18:39:05.863370000Z");
        let b = Message::parse(&body).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        body["metadata"]["messageTime"] = json!("2022-02-02T18:39:05.863370001Z");
        let c = Message::parse(&body).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let body = json!({
            "metadata": {
                "channel": "not-a-uuid",
                "messageNumber": 0,
                "messageTime": "yesterday",
                "messageType": "RocketLaunched",
                "extra": 1
            },
            "message": {"type": "", "launchSpeed": -5, "mission": 7, "by": 3}
        });
        assert_eq!(
            fields(body),
            [
                "message.by",
                "message.launchSpeed",
                "message.mission",
                "message.type",
                "metadata.channel",
                "metadata.extra",
                "metadata.messageNumber",
                "metadata.messageTime",
            ]
        );
    }

    #[test]
    fn numbers_must_be_integers_in_range() {
        for (value, ok) in [
            (json!(1), true),
            (json!(9_223_372_036_854_775_807i64), true),
            (json!(1.5), false),
            (json!(1.0), false),
            (json!("1"), false),
            (json!(-1), false),
            (json!(18_446_744_073_709_551_615u64), false),
            (json!(null), false),
        ] {
            let mut body = launched();
            body["metadata"]["messageNumber"] = value.clone();
            assert_eq!(Message::parse(&body).is_ok(), ok, "{value}");
        }
        for (value, ok) in [
            (json!(0), true),
            (json!(MAX_SPEED), true),
            (json!(MAX_SPEED + 1), false),
            (json!(-1), false),
            (json!(2.5), false),
        ] {
            let mut body = launched();
            body["message"]["launchSpeed"] = value.clone();
            assert_eq!(Message::parse(&body).is_ok(), ok, "{value}");
        }
    }

    #[test]
    fn every_type_has_its_own_fields() {
        let cases = [
            ("RocketSpeedIncreased", json!({"by": 3000}), true),
            ("RocketSpeedDecreased", json!({"by": 2500}), true),
            (
                "RocketExploded",
                json!({"reason": "PRESSURE_VESSEL_FAILURE"}),
                true,
            ),
            (
                "RocketMissionChanged",
                json!({"newMission": "SHUTTLE_MIR"}),
                true,
            ),
            (
                "RocketMissionChanged",
                json!({"mission": "SHUTTLE_MIR"}),
                false,
            ),
            ("RocketExploded", json!({}), false),
            ("RocketSpeedIncreased", json!({"by": "3000"}), false),
            ("RocketSpeedIncreased", json!([]), false),
            ("rocketLaunched", json!({}), false),
        ];
        for (t, message, ok) in cases {
            let mut body = launched();
            body["metadata"]["messageType"] = json!(t);
            body["message"] = message.clone();
            assert_eq!(Message::parse(&body).is_ok(), ok, "{t} {message}");
        }
    }

    #[test]
    fn texts_are_not_blank_short_and_printable() {
        for (value, ok) in [
            (json!("SHUTTLE_MIR"), true),
            (json!("  "), false),
            (json!("a\u{0}b"), false),
            (json!("x".repeat(MAX_TEXT)), true),
            (json!("x".repeat(MAX_TEXT + 1)), false),
        ] {
            let mut body = launched();
            body["message"]["mission"] = value.clone();
            assert_eq!(Message::parse(&body).is_ok(), ok, "{value}");
        }
    }

    #[test]
    fn missing_parts_and_wrong_shapes_are_named() {
        assert_eq!(fields(json!([])), ["body"]);
        assert_eq!(fields(json!({})), ["message", "metadata"]);
        assert_eq!(
            fields(json!({"metadata": "x", "message": {}, "other": 1})),
            ["metadata", "other"]
        );
    }
}
