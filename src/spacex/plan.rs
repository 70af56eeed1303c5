//! What a sync changes, decided without a database: from what SpaceX says and
//! what we hold, the launchpads and launches to write, the pads to lock, the
//! days whose flights are cancelled, and whether the circuit breaker holds the
//! sync. [`super::sync`] reads what we hold, writes the plan and cancels.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::client::Upcoming;
use crate::{
    booking::Cancelled,
    launchpads::{blocked_day, DatePrecision, Launchpad, SpacexLaunch},
};

/// What one sync writes and cancels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The launchpads SpaceX described (none when they were not fetched), all
    /// written: an unchanged one is refreshed.
    pub launchpads: Vec<Launchpad>,
    pub launchpads_added: usize,
    pub launchpads_updated: usize,
    /// The launches to insert or rewrite, each with the day it blocks.
    pub launches: Vec<SpacexLaunch>,
    pub launches_added: usize,
    pub launches_updated: usize,
    /// Upcoming launches SpaceX no longer lists: kept, no longer upcoming.
    pub removed: Vec<String>,
    /// The launchpads on which the sync starts blocking a day or whose row it
    /// changes: locked before anything is written (see
    /// [`crate::launchpads::lock_for_sync`]).
    pub to_lock: BTreeSet<String>,
    /// Every pad and day upcoming launches block once the plan is written, from
    /// today at the pad on: the flights on them are cancelled. In order.
    pub blocked: Vec<(String, NaiveDate)>,
    /// How many pad-days were blocked, from today on, before the sync.
    pub blocked_before: usize,
    /// True when the sync frees every day blocked before it and blocks none of
    /// them again: the mark of an empty or near-empty answer.
    pub frees_every_day: bool,
    /// Launches known to the hour on a launchpad we do not know, as (launch,
    /// launchpad): without the pad's zone they block no day.
    pub on_unknown_pads: Vec<(String, String)>,
}

/// Plans a sync: `launchpads` (when fetched) and `upcoming` are SpaceX's answer;
/// `stored_pads` and `stored_launches` what we hold — every launchpad, and every
/// launch that is upcoming or that the answer lists. `now` dates "today" at each pad.
pub fn plan(
    launchpads: Option<&[Launchpad]>,
    upcoming: &Upcoming,
    stored_pads: &[Launchpad],
    stored_launches: &[SpacexLaunch],
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan {
        launchpads: launchpads.unwrap_or_default().to_vec(),
        ..Plan::default()
    };

    // Launchpads: what changes, and every pad's zone once the refresh is applied.
    let stored_pads: HashMap<&str, &Launchpad> =
        stored_pads.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut timezones: HashMap<&str, Tz> = stored_pads
        .values()
        .map(|p| (p.id.as_str(), p.tz()))
        .collect();
    for pad in launchpads.unwrap_or_default() {
        match stored_pads.get(pad.id.as_str()) {
            None => plan.launchpads_added += 1,
            Some(stored) if *stored == pad => {}
            Some(_) => {
                plan.launchpads_updated += 1;
                plan.to_lock.insert(pad.id.clone());
            }
        }
        timezones.insert(&pad.id, pad.tz());
    }

    // Launches: the rows as they should be, compared with the rows we have.
    let stored: HashMap<&str, &SpacexLaunch> =
        stored_launches.iter().map(|r| (r.id.as_str(), r)).collect();
    for launch in &upcoming.launches {
        let timezone = timezones.get(launch.launchpad_id.as_str()).copied();
        if timezone.is_none() && launch.date_precision == DatePrecision::Hour {
            plan.on_unknown_pads
                .push((launch.id.clone(), launch.launchpad_id.clone()));
        }
        let row = SpacexLaunch {
            id: launch.id.clone(),
            name: launch.name.clone(),
            launchpad_id: launch.launchpad_id.clone(),
            date_utc: launch.date_utc,
            date_precision: launch.date_precision,
            upcoming: launch.upcoming,
            blocked_day: blocked_day(launch.date_utc, launch.date_precision, timezone),
        };
        match stored.get(launch.id.as_str()) {
            None => plan.launches_added += 1,
            Some(before) if **before == row => continue,
            Some(_) => plan.launches_updated += 1,
        }
        plan.launches.push(row);
    }
    for row in &plan.launches {
        let before = stored.get(row.id.as_str()).and_then(|b| b.blocks());
        if let Some((pad, _)) = row.blocks().filter(|b| Some(*b) != before) {
            plan.to_lock.insert(pad.to_string());
        }
    }
    let listed: HashSet<&str> = upcoming.launches.iter().map(|l| l.id.as_str()).collect();
    plan.removed = stored_launches
        .iter()
        .filter(|r| r.upcoming)
        .map(|r| r.id.clone())
        .filter(|id| !listed.contains(id.as_str()) && !upcoming.unreadable_ids.contains(id))
        .collect();
    plan.removed.sort();

    // Each pad's current day: blocks before it have passed.
    let ahead = |(pad, day): &(&str, NaiveDate)| {
        let today = timezones
            .get(pad)
            .map_or(now.date_naive(), |tz| now.with_timezone(tz).date_naive());
        *day >= today
    };
    // The days blocked now and after this sync, from today on.
    let blocked_before: HashSet<(&str, NaiveDate)> = stored_launches
        .iter()
        .filter_map(SpacexLaunch::blocks)
        .filter(ahead)
        .collect();
    let replaced: HashSet<&str> = plan.launches.iter().map(|r| r.id.as_str()).collect();
    let removed: HashSet<&str> = plan.removed.iter().map(String::as_str).collect();
    let blocked_after: BTreeSet<(&str, NaiveDate)> = stored_launches
        .iter()
        .filter(|r| !replaced.contains(r.id.as_str()) && !removed.contains(r.id.as_str()))
        .filter_map(SpacexLaunch::blocks)
        .chain(plan.launches.iter().filter_map(SpacexLaunch::blocks))
        .filter(ahead)
        .collect();
    plan.frees_every_day = !blocked_before.is_empty()
        && blocked_before
            .iter()
            .all(|blocked| !blocked_after.contains(blocked));
    plan.blocked_before = blocked_before.len();
    plan.blocked = blocked_after
        .into_iter()
        .map(|(pad, day)| (pad.to_string(), day))
        .collect();
    plan
}

impl Plan {
    /// The circuit breaker: why this sync must be held rather than applied, given
    /// what cancelling its blocked days would cancel now (`would`) and the most
    /// tickets a sync may cancel (`SPACEX_MAX_CANCELLATIONS`). `None`: apply it.
    pub(crate) fn hold_reason(&self, would: Cancelled, max_tickets: usize) -> Option<String> {
        let mut reasons = Vec::new();
        if would.tickets > max_tickets {
            reasons.push(format!(
                "it would cancel {} tickets on {} flights, more than SPACEX_MAX_CANCELLATIONS ({max_tickets})",
                would.tickets, would.flights
            ));
        }
        if self.frees_every_day {
            reasons.push(format!(
                "it would free all {} days SpaceX blocks (an empty or near-empty answer)",
                self.blocked_before
            ));
        }
        (!reasons.is_empty()).then(|| {
            format!(
                "sync held: {}; apply it with `spacet sync --confirm` or TriggerSync {{confirm: true}}",
                reasons.join(", and ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::{
        launchpads::{LaunchpadStatus, Timezone},
        spacex::client::Launch,
    };

    const CAPE: &str = "5e9e4501f509094ba4566f84";
    const VANDENBERG: &str = "5e9e4502f509092b78566f87";
    const NOWHERE: &str = "0123456789abcdef01234567";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// 2049-06-01 12:00 UTC: 08:00 at the Cape, 05:00 at Vandenberg.
    fn now() -> DateTime<Utc> {
        at("2049-06-01T12:00:00Z")
    }

    fn pad(id: &str, zone: &str) -> Launchpad {
        Launchpad {
            id: id.into(),
            name: format!("pad {id}"),
            full_name: format!("launchpad {id}"),
            locality: "somewhere".into(),
            region: "somewhere".into(),
            timezone: Timezone::parse(zone).unwrap(),
            status: LaunchpadStatus::Active,
        }
    }

    fn pads() -> Vec<Launchpad> {
        vec![
            pad(CAPE, "America/New_York"),
            pad(VANDENBERG, "America/Los_Angeles"),
        ]
    }

    /// SpaceX's description of a launch known to the hour.
    fn launch(id: &str, pad: &str, date_utc: &str) -> Launch {
        Launch {
            id: id.into(),
            name: format!("launch {id}"),
            launchpad_id: pad.into(),
            date_utc: at(date_utc),
            date_precision: DatePrecision::Hour,
            upcoming: true,
        }
    }

    fn answer(launches: Vec<Launch>) -> Upcoming {
        Upcoming {
            seen: launches.len(),
            launches,
            ..Upcoming::default()
        }
    }

    /// The launch as a sync that saw `launch` stored it.
    fn stored(launch: &Launch, blocked: Option<&str>) -> SpacexLaunch {
        SpacexLaunch {
            id: launch.id.clone(),
            name: launch.name.clone(),
            launchpad_id: launch.launchpad_id.clone(),
            date_utc: launch.date_utc,
            date_precision: launch.date_precision,
            upcoming: launch.upcoming,
            blocked_day: blocked.map(day),
        }
    }

    fn blocked(pairs: &[(&str, &str)]) -> Vec<(String, NaiveDate)> {
        pairs.iter().map(|(p, d)| (p.to_string(), day(d))).collect()
    }

    #[test]
    fn a_new_launch_is_added_blocks_its_pad_local_day_and_locks_its_pad() {
        // 03:24 UTC on the 3rd is the evening of the 2nd at the Cape.
        let new = launch("a", CAPE, "2049-06-03T03:24:00Z");
        let plan = plan(None, &answer(vec![new.clone()]), &pads(), &[], now());
        assert_eq!(plan.launches, [stored(&new, Some("2049-06-02"))]);
        assert_eq!((plan.launches_added, plan.launches_updated), (1, 0));
        assert_eq!(plan.to_lock, BTreeSet::from([CAPE.to_string()]));
        assert_eq!(plan.blocked, blocked(&[(CAPE, "2049-06-02")]));
        assert!(plan.removed.is_empty());
        assert!(!plan.frees_every_day);
    }

    #[test]
    fn an_unchanged_launch_writes_and_locks_nothing_but_still_blocks() {
        let same = launch("a", CAPE, "2049-06-05T15:00:00Z");
        let held = [stored(&same, Some("2049-06-05"))];
        let plan = plan(None, &answer(vec![same]), &pads(), &held, now());
        assert!(plan.launches.is_empty());
        assert!(plan.to_lock.is_empty());
        assert_eq!(plan.blocked, blocked(&[(CAPE, "2049-06-05")]));
        assert_eq!(plan.blocked_before, 1);
        assert!(!plan.frees_every_day);
    }

    #[test]
    fn a_moved_launch_frees_its_old_day_and_blocks_the_new_one() {
        let before = launch("a", CAPE, "2049-06-05T15:00:00Z");
        let after = launch("a", VANDENBERG, "2049-06-09T20:00:00Z");
        let held = [stored(&before, Some("2049-06-05"))];
        let plan = plan(None, &answer(vec![after.clone()]), &pads(), &held, now());
        assert_eq!(plan.launches, [stored(&after, Some("2049-06-09"))]);
        assert_eq!((plan.launches_added, plan.launches_updated), (0, 1));
        // Only the pad it starts blocking: freeing a day needs no lock.
        assert_eq!(plan.to_lock, BTreeSet::from([VANDENBERG.to_string()]));
        assert_eq!(plan.blocked, blocked(&[(VANDENBERG, "2049-06-09")]));
        // The one day blocked before is freed: the breaker counts that as every day.
        assert!(plan.frees_every_day);
    }

    #[test]
    fn a_launch_no_longer_listed_is_removed_unless_it_could_not_be_read() {
        let gone = launch("gone", CAPE, "2049-06-05T15:00:00Z");
        let unreadable = launch("unreadable", CAPE, "2049-06-06T15:00:00Z");
        let kept = launch("kept", VANDENBERG, "2049-06-07T20:00:00Z");
        let held = [
            stored(&gone, Some("2049-06-05")),
            stored(&unreadable, Some("2049-06-06")),
            stored(&kept, Some("2049-06-07")),
        ];
        let mut upcoming = answer(vec![kept]);
        upcoming.unreadable_ids = HashSet::from(["unreadable".to_string()]);
        let plan = plan(None, &upcoming, &pads(), &held, now());
        assert_eq!(plan.removed, ["gone"]);
        assert_eq!(
            plan.blocked,
            blocked(&[(CAPE, "2049-06-06"), (VANDENBERG, "2049-06-07")])
        );
        assert_eq!(plan.blocked_before, 3);
        assert!(!plan.frees_every_day);
    }

    #[test]
    fn days_before_today_at_the_pad_are_not_cancelled() {
        // 2049-06-01 at 05:00 at Vandenberg: its May 31st has passed, June 1st not.
        let past = launch("past", VANDENBERG, "2049-05-31T20:00:00Z");
        let today = launch("today", VANDENBERG, "2049-06-01T20:00:00Z");
        let plan = plan(None, &answer(vec![past, today]), &pads(), &[], now());
        assert_eq!(plan.blocked, blocked(&[(VANDENBERG, "2049-06-01")]));
        assert_eq!(plan.launches.len(), 2);
    }

    #[test]
    fn launchpads_are_compared_and_a_new_pad_zone_places_its_launches() {
        let mut retired = pad(CAPE, "America/New_York");
        retired.status = LaunchpadStatus::Retired;
        let fetched = vec![
            retired,
            pad(VANDENBERG, "America/Los_Angeles"),
            pad(NOWHERE, "Pacific/Kwajalein"),
        ];
        // 20:00 UTC on July 1st is July 2nd at Kwajalein.
        let there = launch("k", NOWHERE, "2049-07-01T20:00:00Z");
        let plan = plan(Some(&fetched), &answer(vec![there]), &pads(), &[], now());
        assert_eq!(plan.launchpads, fetched);
        assert_eq!((plan.launchpads_added, plan.launchpads_updated), (1, 1));
        assert_eq!(
            plan.to_lock,
            BTreeSet::from([CAPE.to_string(), NOWHERE.to_string()])
        );
        assert_eq!(plan.blocked, blocked(&[(NOWHERE, "2049-07-02")]));
        assert!(plan.on_unknown_pads.is_empty());
    }

    #[test]
    fn a_launch_known_to_the_hour_on_an_unknown_pad_blocks_nothing() {
        let lost = launch("lost", NOWHERE, "2049-07-01T20:00:00Z");
        let mut by_day = launch("by-day", NOWHERE, "2049-07-03T00:00:00Z");
        by_day.date_precision = DatePrecision::Day;
        let plan = plan(None, &answer(vec![lost, by_day]), &pads(), &[], now());
        assert_eq!(plan.launches[0].blocked_day, None);
        assert_eq!(
            plan.on_unknown_pads,
            [("lost".to_string(), NOWHERE.to_string())]
        );
        // A day is the day as written, whatever the pad.
        assert_eq!(plan.blocked, blocked(&[(NOWHERE, "2049-07-03")]));
    }

    #[test]
    fn the_breaker_holds_an_empty_answer_and_too_many_cancellations() {
        let held = [
            stored(
                &launch("a", CAPE, "2049-06-05T15:00:00Z"),
                Some("2049-06-05"),
            ),
            stored(
                &launch("b", VANDENBERG, "2049-06-07T20:00:00Z"),
                Some("2049-06-07"),
            ),
        ];
        let empty = plan(None, &answer(vec![]), &pads(), &held, now());
        assert_eq!(empty.removed, ["a", "b"]);
        assert!(empty.blocked.is_empty());
        assert!(empty.frees_every_day);
        let none = Cancelled::default();
        assert_eq!(
            empty.hold_reason(none, 100).as_deref(),
            Some(
                "sync held: it would free all 2 days SpaceX blocks (an empty or near-empty answer); \
                 apply it with `spacet sync --confirm` or TriggerSync {confirm: true}"
            )
        );

        let full = plan(
            None,
            &answer(vec![launch("a", CAPE, "2049-06-05T15:00:00Z")]),
            &pads(),
            &held,
            now(),
        );
        assert!(!full.frees_every_day);
        let would = Cancelled {
            flights: 2,
            tickets: 101,
        };
        assert_eq!(
            full.hold_reason(would, 100).as_deref(),
            Some(
                "sync held: it would cancel 101 tickets on 2 flights, more than \
                 SPACEX_MAX_CANCELLATIONS (100); apply it with `spacet sync --confirm` or \
                 TriggerSync {confirm: true}"
            )
        );
        assert_eq!(full.hold_reason(would, 101), None);
        assert_eq!(
            empty
                .hold_reason(would, 100)
                .map(|r| r.matches(", and ").count()),
            Some(1)
        );
    }

    #[test]
    fn a_day_blocked_only_in_the_past_is_not_freed_by_an_empty_answer() {
        let held = [stored(
            &launch("old", CAPE, "2049-05-20T15:00:00Z"),
            Some("2049-05-20"),
        )];
        let plan = plan(None, &answer(vec![]), &pads(), &held, now());
        assert_eq!(plan.removed, ["old"]);
        assert_eq!(plan.blocked_before, 0);
        assert!(!plan.frees_every_day);
        assert_eq!(plan.hold_reason(Cancelled::default(), 0), None);
    }
}
