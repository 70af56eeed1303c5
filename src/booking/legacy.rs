//! The Go service's event, for its consumers during a migration
//! (`EVENTS_FORMAT=legacy` or `both`): one `BookingsCancelled` message per SpaceX
//! sync that cancelled tickets, written in the sync's transaction.
//!
//! Data, byte for byte as the Go service's `encoding/json` wrote it (fields in
//! declaration order, no spaces):
//! `{"type":"BookingsCancelled","payload":{"BookingIDs":["<ticket id>",...]}}`;
//! attributes `origin=spacet-service` and `source=pubsub-notifier` (the relay adds
//! `event_id`). The ordering key is the sync's id.

use serde::Serialize;
use uuid::Uuid;

use crate::outbox::LegacyEvent;

/// `type` of the message, also its `event_type` in the outbox.
pub const BOOKINGS_CANCELLED: &str = "BookingsCancelled";
/// The `origin` attribute: the Go service's fixed value, whatever `APP_NAME` is.
pub const ORIGIN: &str = "spacet-service";
/// The `source` attribute.
pub const SOURCE: &str = "pubsub-notifier";

/// Ticket ids per message: 100 000 ids make about 3.9 MB, well under Pub/Sub's
/// 10 MB. A sync cancelling more (it takes `spacet sync --confirm` past
/// `SPACEX_MAX_CANCELLATIONS`) sends several messages, in order.
pub const MAX_IDS_PER_MESSAGE: usize = 100_000;

#[derive(Serialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    payload: Payload,
}

#[derive(Serialize)]
struct Payload {
    #[serde(rename = "BookingIDs")]
    booking_ids: Vec<String>,
}

/// The message(s) for the tickets one sync cancelled, in the given order; none
/// when it cancelled none.
pub(crate) fn bookings_cancelled(sync_id: Uuid, tickets: &[Uuid]) -> Vec<LegacyEvent> {
    tickets
        .chunks(MAX_IDS_PER_MESSAGE)
        .map(|chunk| {
            let message = Message {
                kind: BOOKINGS_CANCELLED,
                payload: Payload {
                    booking_ids: chunk.iter().map(Uuid::to_string).collect(),
                },
            };
            LegacyEvent {
                event_type: BOOKINGS_CANCELLED,
                aggregate_id: sync_id,
                data: serde_json::to_vec(&message).expect("plain strings serialise"),
                attributes: vec![("origin", ORIGIN.into()), ("source", SOURCE.into())],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_the_go_services_bytes() {
        let a = Uuid::parse_str("0190d5a4-0000-7000-8000-000000000001").unwrap();
        let b = Uuid::parse_str("0190d5a4-0000-7000-8000-000000000002").unwrap();
        let sync = Uuid::now_v7();
        let events = bookings_cancelled(sync, &[a, b]);
        assert_eq!(events.len(), 1);
        assert_eq!(
            String::from_utf8(events[0].data.clone()).unwrap(),
            r#"{"type":"BookingsCancelled","payload":{"BookingIDs":["0190d5a4-0000-7000-8000-000000000001","0190d5a4-0000-7000-8000-000000000002"]}}"#
        );
        assert_eq!(events[0].aggregate_id, sync);
        assert_eq!(
            events[0].attributes,
            vec![
                ("origin", "spacet-service".to_string()),
                ("source", "pubsub-notifier".to_string())
            ]
        );
        assert!(bookings_cancelled(sync, &[]).is_empty());
    }

    #[test]
    fn a_huge_sync_is_split_in_order_below_pubsubs_limit() {
        let ids: Vec<Uuid> = (0..MAX_IDS_PER_MESSAGE + 1)
            .map(|_| Uuid::now_v7())
            .collect();
        let events = bookings_cancelled(Uuid::now_v7(), &ids);
        assert_eq!(events.len(), 2);
        assert!(
            events[0].data.len() < 10_000_000 / 2,
            "{}",
            events[0].data.len()
        );
        let second: serde_json::Value = serde_json::from_slice(&events[1].data).unwrap();
        assert_eq!(
            second["payload"]["BookingIDs"],
            serde_json::json!([ids[MAX_IDS_PER_MESSAGE].to_string()])
        );
    }
}
