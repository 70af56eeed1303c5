//! Booking domain values. A request becomes a [`NewBooking`] through
//! [`NewBooking::parse`], which names every field violation at once; after that
//! nothing is re-checked.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use tonic_types::FieldViolation;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::launchpads::Launchpad;

/// Where a flight goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    Mars,
    Moon,
    Pluto,
    AsteroidBelt,
    Europa,
    Titan,
    Ganymede,
}

impl Destination {
    /// Every destination, in the proto's order.
    pub const ALL: [Destination; 7] = [
        Destination::Mars,
        Destination::Moon,
        Destination::Pluto,
        Destination::AsteroidBelt,
        Destination::Europa,
        Destination::Titan,
        Destination::Ganymede,
    ];

    /// The name used in the database, the proto and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::Mars => "MARS",
            Destination::Moon => "MOON",
            Destination::Pluto => "PLUTO",
            Destination::AsteroidBelt => "ASTEROID_BELT",
            Destination::Europa => "EUROPA",
            Destination::Titan => "TITAN",
            Destination::Ganymede => "GANYMEDE",
        }
    }

    /// Parses a name written by [`Destination::as_str`].
    pub fn parse(name: &str) -> Option<Destination> {
        Destination::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A passenger's gender; `Unspecified` is allowed, as in the Go service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gender {
    Unspecified,
    Male,
    Female,
    NonBinary,
    Other,
}

impl Gender {
    pub const ALL: [Gender; 5] = [
        Gender::Unspecified,
        Gender::Male,
        Gender::Female,
        Gender::NonBinary,
        Gender::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Gender::Unspecified => "UNSPECIFIED",
            Gender::Male => "MALE",
            Gender::Female => "FEMALE",
            Gender::NonBinary => "NON_BINARY",
            Gender::Other => "OTHER",
        }
    }

    pub fn parse(name: &str) -> Option<Gender> {
        Gender::ALL.into_iter().find(|g| g.as_str() == name)
    }
}

/// Status of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketStatus {
    Confirmed,
    Cancelled,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Confirmed => "CONFIRMED",
            TicketStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(name: &str) -> Option<TicketStatus> {
        match name {
            "CONFIRMED" => Some(TicketStatus::Confirmed),
            "CANCELLED" => Some(TicketStatus::Cancelled),
            _ => None,
        }
    }
}

/// Status of a flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlightStatus {
    Scheduled,
    Cancelled,
}

impl FlightStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FlightStatus::Scheduled => "scheduled",
            FlightStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<FlightStatus> {
        match name {
            "scheduled" => Some(FlightStatus::Scheduled),
            "cancelled" => Some(FlightStatus::Cancelled),
            _ => None,
        }
    }
}

crate::db::text_enum!(Destination);
crate::db::text_enum!(Gender);
crate::db::text_enum!(TicketStatus);
crate::db::text_enum!(CancellationReason);
crate::db::text_enum!(FlightStatus);

/// Why a ticket (or flight) was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancellationReason {
    UserRequested,
    SpacexConflict,
}

impl CancellationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancellationReason::UserRequested => "USER_REQUESTED",
            CancellationReason::SpacexConflict => "SPACEX_CONFLICT",
        }
    }

    pub fn parse(name: &str) -> Option<CancellationReason> {
        match name {
            "USER_REQUESTED" => Some(CancellationReason::UserRequested),
            "SPACEX_CONFLICT" => Some(CancellationReason::SpacexConflict),
            _ => None,
        }
    }
}

/// A ticket id (a UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TicketId(pub Uuid);

impl TicketId {
    /// Parses the `id` field of a request.
    pub fn parse(field: &str, raw: &str) -> Result<TicketId, FieldViolation> {
        Uuid::parse_str(raw.trim())
            .map(TicketId)
            .map_err(|_| FieldViolation::new(field, format!("{raw:?} is not a ticket id (a UUID)")))
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A first or last name: 1–50 characters after trimming; letters, combining marks,
/// spaces, hyphens, apostrophes and dots, with at least one letter. Stored in NFC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(raw: &str) -> Result<PersonName, String> {
        let name: String = raw.trim().nfc().collect();
        let length = name.chars().count();
        if length == 0 {
            return Err("is required".into());
        }
        if length > 50 {
            return Err(format!("must be at most 50 characters (has {length})"));
        }
        if let Some(bad) = name.chars().find(|c| {
            !(c.is_alphabetic()
                || unicode_normalization::char::is_combining_mark(*c)
                || matches!(c, ' ' | '-' | '\'' | '’' | '.'))
        }) {
            return Err(format!(
                "may contain only letters, spaces, hyphens, apostrophes and dots (found {bad:?})"
            ));
        }
        if !name.chars().any(char::is_alphabetic) {
            return Err("must contain a letter".into());
        }
        Ok(PersonName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The fields of a booking request, before parsing (the proto at the edge fills it).
#[derive(Debug, Clone, Default)]
pub struct BookingFields {
    pub first_name: String,
    pub last_name: String,
    /// `None` for an unknown enum number.
    pub gender: Option<Gender>,
    pub birthday: Option<Result<DateTime<Utc>, String>>,
    pub launchpad_id: String,
    pub launch_date: Option<Result<DateTime<Utc>, String>>,
    /// `None` when unset, unspecified or unknown.
    pub destination: Option<Destination>,
    pub request_id: String,
    pub idempotency_key_header: Option<String>,
    /// The passenger an agent books for (empty: none named). Not parsed here:
    /// [`crate::booking::book`] applies the owner rule to it first.
    pub owner: String,
}

/// A valid booking request.
#[derive(Debug, Clone)]
pub struct NewBooking {
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub gender: Gender,
    pub birthday: NaiveDate,
    pub launchpad_id: String,
    pub launch_day: NaiveDate,
    pub destination: Destination,
    pub idempotency_key: Option<String>,
    /// The passenger who will own the ticket (none when authentication is off and
    /// no passenger was named): their active tickets are capped.
    pub owner: Option<String>,
    /// Who made the request (the token's subject, `""` when authentication is
    /// off): the scope of the idempotency key.
    pub booked_by: String,
    /// The UTC day the booking is made: tickets from it on are active.
    pub today: NaiveDate,
}

const EARLIEST_BIRTHDAY: NaiveDate = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap();

/// The first day any date input may name: chrono parses years far beyond 1–9999
/// (`+262142-12-31`), where day arithmetic overflows and PostgreSQL refuses values.
pub const FIRST_DAY: NaiveDate = NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
/// The last day any date input may name.
pub const LAST_DAY: NaiveDate = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap();

/// `day` when it lies in years 1–9999, or the violation's description.
pub(crate) fn check_day(day: NaiveDate) -> Result<NaiveDate, String> {
    if (FIRST_DAY..=LAST_DAY).contains(&day) {
        Ok(day)
    } else {
        Err(format!(
            "must be between {FIRST_DAY} and {LAST_DAY} (got {day})"
        ))
    }
}

impl NewBooking {
    /// Parses every field and reports every violation. `pad` is the launchpad the
    /// request names (`None` when unknown); `now` comes from the injected clock.
    pub fn parse(
        fields: BookingFields,
        pad: Option<&Launchpad>,
        now: DateTime<Utc>,
    ) -> Result<NewBooking, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let mut violation = |field: &str, description: String| {
            violations.push(FieldViolation::new(field, description))
        };

        let first_name = PersonName::parse(&fields.first_name)
            .map_err(|e| violation("first_name", e))
            .ok();
        let last_name = PersonName::parse(&fields.last_name)
            .map_err(|e| violation("last_name", e))
            .ok();
        if fields.gender.is_none() {
            violation(
                "gender",
                "is not one of UNSPECIFIED, MALE, FEMALE, NON_BINARY, OTHER".into(),
            );
        }
        let today_utc = now.date_naive();
        let birthday = match fields.birthday {
            None => {
                violation("birthday", "is required".into());
                None
            }
            Some(Err(e)) => {
                violation("birthday", e);
                None
            }
            Some(Ok(t)) => {
                // 1900-01-01 to yesterday: inside years 1–9999 already.
                let day = t.date_naive();
                if day >= today_utc {
                    violation("birthday", format!("must be in the past (got {day})"));
                    None
                } else if day < EARLIEST_BIRTHDAY {
                    violation(
                        "birthday",
                        format!("must not be before 1900-01-01 (got {day})"),
                    );
                    None
                } else {
                    Some(day)
                }
            }
        };
        let launchpad_id = fields.launchpad_id.trim().to_string();
        if launchpad_id.is_empty() {
            violation("launchpad_id", "is required".into());
        } else if pad.is_none() {
            violation(
                "launchpad_id",
                format!("{launchpad_id:?} is not a known launchpad"),
            );
        }
        let launch_day = match fields.launch_date {
            None => {
                violation("launch_date", "is required".into());
                None
            }
            Some(Err(e)) => {
                violation("launch_date", e);
                None
            }
            Some(Ok(t)) => match check_day(t.date_naive()) {
                Err(e) => {
                    violation("launch_date", e);
                    None
                }
                Ok(day) => match pad {
                    Some(pad) => {
                        let today_at_pad = now.with_timezone(&pad.tz()).date_naive();
                        if day <= today_at_pad {
                            violation(
                                "launch_date",
                                format!("must be after today at the launchpad ({today_at_pad} in {}), got {day}", pad.tz()),
                            );
                            None
                        } else {
                            Some(day)
                        }
                    }
                    None if day <= today_utc => {
                        violation("launch_date", format!("must be in the future, got {day}"));
                        None
                    }
                    None => Some(day),
                },
            },
        };
        if fields.destination.is_none() {
            violation(
                "destination_id",
                "must be one of MARS (0, the default), MOON (1), PLUTO (2), ASTEROID_BELT (3), \
                 EUROPA (4), TITAN (5), GANYMEDE (6)"
                    .into(),
            );
        }
        let body_key = Some(fields.request_id.trim().to_string()).filter(|k| !k.is_empty());
        let header_key = fields
            .idempotency_key_header
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        let idempotency_key = match (body_key, header_key) {
            (Some(body), Some(header)) if body != header => {
                violation(
                    "request_id",
                    "differs from the Idempotency-Key header".into(),
                );
                None
            }
            (body, header) => body.or(header),
        };
        if idempotency_key
            .as_ref()
            .is_some_and(|k| k.chars().count() > 128)
        {
            violation("request_id", "must be at most 128 characters".into());
        }

        match (
            first_name,
            last_name,
            birthday,
            launch_day,
            fields.destination,
            fields.gender,
        ) {
            (
                Some(first_name),
                Some(last_name),
                Some(birthday),
                Some(launch_day),
                Some(destination),
                Some(gender),
            ) if violations.is_empty() => Ok(NewBooking {
                first_name,
                last_name,
                gender,
                birthday,
                launchpad_id,
                launch_day,
                destination,
                idempotency_key,
                owner: None,
                booked_by: String::new(),
                today: today_utc,
            }),
            _ => Err(violations),
        }
    }

    /// What must match for a retried request with the same idempotency key.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}",
            self.first_name.as_str(),
            self.last_name.as_str(),
            self.gender.as_str(),
            self.birthday,
            self.launchpad_id,
            self.launch_day,
            self.destination.as_str()
        )
    }
}

/// Monday of the ISO week of `day` (the earliest representable day when that
/// Monday is not; inputs are held to years 1–9999, far from it).
pub(crate) fn week_start(day: NaiveDate) -> NaiveDate {
    use chrono::Datelike;
    day.checked_sub_days(chrono::Days::new(
        day.weekday().num_days_from_monday() as u64
    ))
    .unwrap_or(NaiveDate::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_many_languages_are_valid() {
        for ok in [
            "Li",
            "Zoë",
            "O'Neil",
            "Nguyễn",
            "Jean-Luc",
            "St. John",
            "Ōtsuka",
            "Zoe\u{0308}",
        ] {
            assert!(PersonName::parse(ok).is_ok(), "{ok:?} should be valid");
        }
    }

    #[test]
    fn digits_control_characters_and_blanks_are_rejected() {
        for bad in [
            "",
            "   ",
            "R2D2",
            "Ann\u{0007}",
            "Bo\nb",
            "--",
            &"a".repeat(51),
            "<script>",
        ] {
            assert!(
                PersonName::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(PersonName::parse(&"é".repeat(50)).is_ok());
    }

    #[test]
    fn a_launch_date_past_year_9999_is_named() {
        let pad = Launchpad {
            id: "5e9e4502f509094188566f88".into(),
            name: "KSC LC 39A".into(),
            full_name: "Kennedy Space Center Historic Launch Complex 39A".into(),
            locality: "Cape Canaveral".into(),
            region: "Florida".into(),
            timezone: crate::launchpads::Timezone(chrono_tz::UTC),
            status: crate::launchpads::LaunchpadStatus::Active,
        };
        let far = NaiveDate::from_ymd_opt(10_000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        let fields = BookingFields {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            gender: Some(Gender::Female),
            birthday: Some(Ok(NaiveDate::from_ymd_opt(1990, 12, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc())),
            launchpad_id: pad.id.clone(),
            launch_date: Some(Ok(far)),
            destination: Some(Destination::Mars),
            ..Default::default()
        };
        let now = NaiveDate::from_ymd_opt(2048, 6, 1)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc();
        let fields: Vec<String> = NewBooking::parse(fields, Some(&pad), now)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["launch_date"]);
    }

    #[test]
    fn the_edges_of_the_date_range_do_not_overflow() {
        assert_eq!(check_day(FIRST_DAY), Ok(FIRST_DAY));
        assert_eq!(check_day(LAST_DAY), Ok(LAST_DAY));
        assert!(check_day(FIRST_DAY.pred_opt().unwrap()).is_err());
        assert!(check_day(LAST_DAY.succ_opt().unwrap()).is_err());
        // No panic at chrono's own limits.
        week_start(NaiveDate::MIN);
        week_start(NaiveDate::MAX);
    }

    #[test]
    fn week_starts_on_monday() {
        let sunday = NaiveDate::from_ymd_opt(2049, 3, 7).unwrap();
        assert_eq!(
            week_start(sunday),
            NaiveDate::from_ymd_opt(2049, 3, 1).unwrap()
        );
        assert_eq!(
            week_start(NaiveDate::from_ymd_opt(2049, 3, 1).unwrap()),
            NaiveDate::from_ymd_opt(2049, 3, 1).unwrap()
        );
    }
}
