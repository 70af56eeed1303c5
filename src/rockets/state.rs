//! A rocket's state as a pure function of the set of its messages.
//!
//! [`Summary`] is a commutative monoid: [`Summary::of`] says what one message
//! contributes, [`Summary::combine`] merges two summaries, and the order in which
//! messages are combined never matters. That is what makes the state independent
//! of arrival order, and what lets the database keep it incrementally: the writer
//! stores each message's contribution and the upsert in `store.rs` applies the same
//! `combine` to the stored row (see the comments there). Duplicates never reach
//! `combine`: the primary key on (channel, message number) drops them first.
//!
//! The rules where the issue leaves a choice:
//! - the lowest-numbered `RocketLaunched` gives the type, launch speed and launch
//!   time (it is "sent once": a second one is kept but only counts for the mission);
//! - the lowest-numbered `RocketExploded` gives the reason; any explosion makes the
//!   status `exploded` for good, whatever arrives later;
//! - speed changes and mission changes count whatever their number relative to the
//!   launch or the explosion (the formulas have no cut-off);
//! - the last message time is the time of the highest-numbered message.

use chrono::{DateTime, Utc};

use super::message::{Body, Message};

/// The launch: the lowest-numbered `RocketLaunched`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Launch {
    /// First field: the derived order is by number.
    pub number: i64,
    pub rocket_type: String,
    pub launch_speed: i64,
    pub time: DateTime<Utc>,
}

/// A value set by the message with this number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Numbered<T> {
    /// First field: the derived order is by number.
    pub number: i64,
    pub value: T,
}

/// What a set of messages says about one rocket. `Default` is the empty set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    pub launch: Option<Launch>,
    /// Increases minus decreases.
    pub speed_delta: i64,
    /// Set by the highest-numbered `RocketLaunched` or `RocketMissionChanged`.
    pub mission: Option<Numbered<String>>,
    /// The lowest-numbered `RocketExploded` and its reason.
    pub explosion: Option<Numbered<String>>,
    /// The highest message number and that message's time.
    pub last: Option<Numbered<DateTime<Utc>>>,
    /// How many distinct messages.
    pub received: i64,
}

/// Launched or not, exploded or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// No `RocketLaunched` (nor explosion) yet.
    Unknown,
    Launched,
    Exploded,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 3] = [Status::Unknown, Status::Launched, Status::Exploded];

    /// The name in the database, the proto and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Launched => "launched",
            Status::Exploded => "exploded",
        }
    }

    /// Parses a name written by [`Status::as_str`].
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

// Decoded from the status expression of the rocket queries (src/rockets/store.rs).
crate::db::text_enum!(Status);

impl Summary {
    /// What one message contributes.
    pub fn of(message: &Message) -> Summary {
        let number = message.number;
        let time = message.time();
        let mut summary = Summary {
            last: Some(Numbered {
                number,
                value: time,
            }),
            received: 1,
            ..Summary::default()
        };
        match &message.body {
            Body::Launched {
                rocket_type,
                launch_speed,
                mission,
            } => {
                summary.launch = Some(Launch {
                    number,
                    rocket_type: rocket_type.clone(),
                    launch_speed: *launch_speed,
                    time,
                });
                summary.mission = Some(Numbered {
                    number,
                    value: mission.clone(),
                });
            }
            Body::SpeedIncreased { by } => summary.speed_delta = *by,
            Body::SpeedDecreased { by } => summary.speed_delta = -*by,
            Body::Exploded { reason } => {
                summary.explosion = Some(Numbered {
                    number,
                    value: reason.clone(),
                })
            }
            Body::MissionChanged { new_mission } => {
                summary.mission = Some(Numbered {
                    number,
                    value: new_mission.clone(),
                })
            }
        }
        summary
    }

    /// Merges the summaries of two disjoint sets of messages. Commutative and
    /// associative; `Summary::default()` is its identity. (The tests' model of
    /// the database's aggregate.)
    #[cfg(test)]
    pub(crate) fn combine(self, other: Summary) -> Summary {
        Summary {
            launch: min_some(self.launch, other.launch),
            // Wrapping keeps the operation associative even in the (validated away)
            // case of an overflow.
            speed_delta: self.speed_delta.wrapping_add(other.speed_delta),
            mission: self.mission.max(other.mission),
            explosion: min_some(self.explosion, other.explosion),
            last: self.last.max(other.last),
            received: self.received + other.received,
        }
    }

    /// The state of a set of messages of one rocket. Messages with a number already
    /// seen are duplicates and are skipped (the first one counts, as in the database).
    #[cfg(test)]
    pub(crate) fn fold<'a>(messages: impl IntoIterator<Item = &'a Message>) -> Summary {
        let mut distinct = std::collections::BTreeMap::new();
        for message in messages {
            distinct.entry(message.number).or_insert(message);
        }
        distinct
            .into_values()
            .map(Summary::of)
            .fold(Summary::default(), Summary::combine)
    }

    /// Exploded (final), launched, or unknown.
    pub fn status(&self) -> Status {
        if self.explosion.is_some() {
            Status::Exploded
        } else if self.launch.is_some() {
            Status::Launched
        } else {
            Status::Unknown
        }
    }

    /// Launch speed (0 before the launch message) plus increases minus decreases.
    pub fn speed(&self) -> i64 {
        self.launch
            .as_ref()
            .map_or(0, |l| l.launch_speed)
            .wrapping_add(self.speed_delta)
    }

    /// Message numbers below the highest one that have not arrived.
    pub fn missing(&self) -> i64 {
        self.last.as_ref().map_or(0, |l| l.number) - self.received
    }
}

/// `min` where `None` means "nothing yet" rather than "smallest".
#[cfg(test)]
fn min_some<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn message(number: i64, body: Body) -> Message {
        Message {
            channel: Uuid::nil(),
            number,
            sent_at: Utc
                .timestamp_opt(1_650_000_000 + number * 7, 123_456_789)
                .unwrap()
                .fixed_offset(),
            body,
        }
    }

    fn body() -> impl Strategy<Value = Body> {
        let text = prop::sample::select(vec!["A", "B", "C", "D"]).prop_map(String::from);
        prop_oneof![
            1 => (text.clone(), 0..10_000i64, text.clone()).prop_map(|(rocket_type, launch_speed, mission)| Body::Launched { rocket_type, launch_speed, mission }),
            4 => (0..5_000i64).prop_map(|by| Body::SpeedIncreased { by }),
            4 => (0..5_000i64).prop_map(|by| Body::SpeedDecreased { by }),
            1 => text.clone().prop_map(|reason| Body::Exploded { reason }),
            2 => text.prop_map(|new_mission| Body::MissionChanged { new_mission }),
        ]
    }

    /// A rocket's messages (numbers 1..=n, some missing), then a delivery of them:
    /// shuffled, with some of them sent more than once.
    fn deliveries() -> impl Strategy<Value = (Vec<Message>, Vec<Message>)> {
        prop::collection::vec((body(), prop::bool::weighted(0.85)), 1..40)
            .prop_map(|bodies| {
                bodies
                    .into_iter()
                    .enumerate()
                    .filter(|(_, (_, delivered))| *delivered)
                    .map(|(i, (body, _))| message(i as i64 + 1, body))
                    .collect::<Vec<_>>()
            })
            .prop_flat_map(|messages| {
                let n = messages.len();
                let duplicates = prop::collection::vec(0..n.max(1), 0..n + 1);
                (Just(messages), duplicates)
            })
            .prop_flat_map(|(messages, duplicates)| {
                let mut delivered = messages.clone();
                delivered.extend(duplicates.iter().filter_map(|&i| messages.get(i).cloned()));
                (Just(messages), Just(delivered).prop_shuffle())
            })
    }

    /// The obvious sequential reading, written independently of `Summary`: walk the
    /// messages in number order.
    fn in_number_order(messages: &[Message]) -> (Status, i64, Option<String>, Option<String>) {
        let mut sorted: Vec<&Message> = messages.iter().collect();
        sorted.sort_by_key(|m| m.number);
        sorted.dedup_by_key(|m| m.number);
        let (mut status, mut launch_speed, mut delta, mut mission, mut reason) =
            (Status::Unknown, 0, 0, None, None);
        let mut launched = false;
        for m in sorted {
            match &m.body {
                Body::Launched {
                    launch_speed: s,
                    mission: ms,
                    ..
                } => {
                    if !launched {
                        launch_speed = *s;
                        launched = true;
                    }
                    mission = Some(ms.clone());
                    if status == Status::Unknown {
                        status = Status::Launched;
                    }
                }
                Body::SpeedIncreased { by } => delta += by,
                Body::SpeedDecreased { by } => delta -= by,
                Body::Exploded { reason: r } => {
                    if status != Status::Exploded {
                        reason = Some(r.clone());
                    }
                    status = Status::Exploded;
                }
                Body::MissionChanged { new_mission } => mission = Some(new_mission.clone()),
            }
        }
        (status, launch_speed + delta, mission, reason)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_permutation_with_duplicates_gives_the_same_state((messages, delivered) in deliveries()) {
            prop_assume!(!messages.is_empty());
            let expected = Summary::fold(&messages);
            prop_assert_eq!(&Summary::fold(&delivered), &expected);
            // Incrementally, one message at a time, as the writer's batches do it.
            let mut seen = std::collections::HashSet::new();
            let incremental = delivered
                .iter()
                .filter(|m| seen.insert(m.number))
                .fold(Summary::default(), |s, m| s.combine(Summary::of(m)));
            prop_assert_eq!(&incremental, &expected);

            let (status, speed, mission, reason) = in_number_order(&messages);
            prop_assert_eq!(expected.status(), status);
            prop_assert_eq!(expected.speed(), speed);
            prop_assert_eq!(expected.mission.as_ref().map(|m| m.value.clone()), mission);
            prop_assert_eq!(expected.explosion.as_ref().map(|e| e.value.clone()), reason);
            let highest = messages.iter().map(|m| m.number).max().unwrap();
            prop_assert_eq!(expected.missing(), highest - messages.len() as i64);
        }

        #[test]
        fn combine_is_associative_and_commutative(
            (a, _) in deliveries(), (b, _) in deliveries(), (c, _) in deliveries()
        ) {
            // Disjoint sets: shift the numbers apart.
            let shift = |ms: Vec<Message>, by: i64| ms.into_iter().map(|mut m| { m.number += by; m }).collect::<Vec<_>>();
            let (a, b, c) = (Summary::fold(&a), Summary::fold(&shift(b, 100)), Summary::fold(&shift(c, 200)));
            prop_assert_eq!(a.clone().combine(b.clone()), b.clone().combine(a.clone()));
            prop_assert_eq!(
                a.clone().combine(b.clone()).combine(c.clone()),
                a.clone().combine(b.clone().combine(c.clone()))
            );
            prop_assert_eq!(a.clone().combine(Summary::default()), a);
        }
    }

    #[test]
    fn messages_before_the_launch_count_when_it_arrives() {
        let early = [
            message(2, Body::SpeedIncreased { by: 300 }),
            message(
                3,
                Body::MissionChanged {
                    new_mission: "MIR".into(),
                },
            ),
        ];
        let before = Summary::fold(&early);
        assert_eq!(before.status(), Status::Unknown);
        assert_eq!(before.speed(), 300);
        assert_eq!(before.missing(), 1);
        let launch = message(
            1,
            Body::Launched {
                rocket_type: "Falcon-9".into(),
                launch_speed: 500,
                mission: "ARTEMIS".into(),
            },
        );
        let after = before.combine(Summary::of(&launch));
        assert_eq!(after.status(), Status::Launched);
        assert_eq!(after.speed(), 800);
        assert_eq!(after.mission.as_ref().unwrap().value, "MIR");
        assert_eq!(after.missing(), 0);
    }

    #[test]
    fn an_explosion_is_final() {
        let s = Summary::fold(&[
            message(
                1,
                Body::Launched {
                    rocket_type: "Falcon-9".into(),
                    launch_speed: 500,
                    mission: "ARTEMIS".into(),
                },
            ),
            message(
                2,
                Body::Exploded {
                    reason: "PRESSURE_VESSEL_FAILURE".into(),
                },
            ),
            message(
                3,
                Body::Launched {
                    rocket_type: "Falcon-Heavy".into(),
                    launch_speed: 900,
                    mission: "AGAIN".into(),
                },
            ),
        ]);
        assert_eq!(s.status(), Status::Exploded);
        assert_eq!(s.explosion.unwrap().value, "PRESSURE_VESSEL_FAILURE");
        assert_eq!(s.launch.unwrap().rocket_type, "Falcon-9");
        assert_eq!(s.mission.unwrap().value, "AGAIN");
    }
}
