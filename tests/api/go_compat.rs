//! An existing client of the Go service, unchanged, against SpaceT: a gRPC client
//! generated from the Go service's spacet.v1 contract (`tests/compat/go`, built by
//! `build.rs`), and the Go service's HTTP requests, decoded with that contract's
//! JSON mapping. Every call the Go clients make must work, with the Go numbering.

use serde_json::{json, Value};

use crate::helpers::{pads, send_json, TestApp};

#[allow(clippy::all, dead_code, missing_docs)]
mod go {
    include!(concat!(env!("OUT_DIR"), "/go_compat/spacet.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/go_compat/spacet.v1.serde.rs"));
}

use go::{space_t_service_client::SpaceTServiceClient, Destination, Gender};

fn day(date: &str) -> pbjson_types::Timestamp {
    let t = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

fn go_booking(pad: &str, date: &str, destination: Option<Destination>) -> go::BookingRequest {
    go::BookingRequest {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        gender: Gender::Female as i32,
        birthday: Some(day("1990-12-01")),
        launchpad_id: pad.into(),
        launch_date: Some(day(date)),
        // A Go client that leaves the destination out sends nothing: 0, MARS.
        destination_id: destination.map_or(0, |d| d as i32),
    }
}

fn ids(tickets: &[go::Ticket]) -> Vec<&str> {
    let mut ids: Vec<&str> = tickets.iter().map(|t| t.id.as_str()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_client_generated_from_the_go_proto_books_lists_and_cancels_over_grpc() {
    let app = TestApp::spawn().await;
    let mut client = SpaceTServiceClient::connect(format!("http://127.0.0.1:{}", app.grpc_port))
        .await
        .unwrap();

    // MOON is 1 in Go: it books MOON, and the reply decodes with Go's types.
    let moon = client
        .launch_booking(go_booking(
            pads::KSC_39A,
            "2049-12-01",
            Some(Destination::Moon),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moon.destination_id(), Destination::Moon);
    assert_eq!(moon.status, "scheduled");
    assert_eq!(moon.launch_date, Some(day("2049-12-01")));
    assert_eq!(moon.launchpad_id, pads::KSC_39A);
    assert_eq!(
        (moon.first_name.as_str(), moon.last_name.as_str()),
        ("Ada", "Lovelace")
    );
    assert_eq!(
        app.ticket(&moon.id).await.unwrap().destination_id,
        spacet::proto::Destination::Moon as i32,
        "SpaceT's own API sees MOON too"
    );

    // An omitted destination is MARS, as it was in Go.
    let mars = client
        .launch_booking(go_booking(pads::CCSFS_40, "2049-12-02", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mars.destination_id(), Destination::Mars);
    let stored = app
        .count(&format!(
            "SELECT count(*) FROM tickets WHERE id = '{}' AND destination = 'MARS'",
            mars.id
        ))
        .await;
    assert_eq!(stored, 1);

    // ListBookings with and without Go's string filters.
    let lister = client.clone();
    let list = |request: go::ListTicketsRequest| {
        let mut client = lister.clone();
        async move {
            client
                .list_bookings(request)
                .await
                .unwrap()
                .into_inner()
                .tickets
        }
    };
    let all = list(go::ListTicketsRequest::default()).await;
    assert_eq!(ids(&all), ids(&[moon.clone(), mars.clone()]));
    let by = |destination: Option<&str>, status: Option<&str>| go::ListTicketsRequest {
        destination: destination.map(Into::into),
        status: status.map(Into::into),
        ..Default::default()
    };
    assert_eq!(ids(&list(by(Some("moon"), None)).await), [moon.id.as_str()]);
    assert_eq!(
        ids(&list(by(Some("MARS"), Some("scheduled"))).await),
        [mars.id.as_str()]
    );
    assert_eq!(list(by(None, Some("scheduled"))).await.len(), 2);
    assert!(list(by(None, Some("cancelled"))).await.is_empty());
    let name = go::ListTicketsRequest {
        first_name: Some("DA".into()),
        last_name: Some("lace".into()),
        launchpad_id: Some(pads::KSC_39A[..10].into()),
        ..Default::default()
    };
    assert_eq!(ids(&list(name).await), [moon.id.as_str()]);
    let first_page = client
        .list_bookings(go::ListTicketsRequest {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.tickets.len(), 1);
    let second_page = list(go::ListTicketsRequest {
        limit: 1,
        cursor: Some(first_page.next_cursor.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(second_page.len(), 1);
    assert_ne!(second_page[0].id, first_page.tickets[0].id);

    // CancelBooking and GetBooking.
    let cancelled = client
        .cancel_booking(go::TicketId {
            id: moon.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.id, moon.id);
    let got = client
        .get_booking(go::TicketId {
            id: moon.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, "cancelled");
    assert_eq!(got.destination_id(), Destination::Moon);
    assert_eq!(
        ids(&list(by(None, Some("cancelled"))).await),
        [moon.id.as_str()]
    );
    assert_eq!(
        ids(&list(by(Some("moon"), Some("scheduled"))).await),
        Vec::<&str>::new()
    );
}

/// Decodes an HTTP answer with the Go contract's JSON mapping, after checking that
/// every timestamp in it is written as protojson writes it (UTC, `Z`).
fn go_json<T: serde::de::DeserializeOwned>(body: &Value) -> T {
    fn timestamps_end_in_z(value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    if let Some(text) = value.as_str() {
                        if chrono::DateTime::parse_from_rfc3339(text).is_ok() {
                            assert!(text.ends_with('Z'), "{key}: {text}");
                        }
                    }
                    timestamps_end_in_z(value);
                }
            }
            Value::Array(items) => items.iter().for_each(timestamps_end_in_z),
            _ => {}
        }
    }
    timestamps_end_in_z(body);
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn the_go_services_http_requests_work_unchanged() {
    let app = TestApp::spawn().await;
    let booking = |pad: &str, date: &str, destination: Option<&str>| {
        let mut body = json!({"firstName":"Ada","lastName":"Lovelace","gender":"FEMALE",
            "birthday":"1990-12-01T00:00:00Z","launchpadId":pad,"launchDate":format!("{date}T00:00:00Z")});
        if let Some(d) = destination {
            body["destinationId"] = json!(d);
        }
        body
    };

    // A booking posted as text/plain is read as JSON, as grpc-gateway reads it.
    let (status, moon) = send_json(
        app.client
            .post(app.url("/v1/bookings"))
            .header("content-type", "text/plain")
            .body(booking(pads::KSC_39A, "2049-12-01", Some("MOON")).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{moon}");
    let moon: go::Ticket = go_json(&moon);
    assert_eq!(moon.destination_id(), Destination::Moon);
    assert_eq!(moon.status, "scheduled");

    // No destination: MARS. A body without any Content-Type is JSON too.
    let (status, mars) = send_json(
        app.client
            .post(app.url("/v1/bookings"))
            .body(booking(pads::CCSFS_40, "2049-12-02", None).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{mars}");
    let mars: go::Ticket = go_json(&mars);
    assert_eq!(mars.destination_id(), Destination::Mars);

    // Go's query filters, with an unknown parameter (a cache buster) discarded.
    let list = |query: &'static str| {
        let url = app.url(&format!("/v1/bookings?{query}"));
        let client = app.client.clone();
        async move {
            let (status, body) = send_json(client.get(url)).await;
            assert_eq!(status, 200, "{query}: {body}");
            let page: go::ListTicketsResponse = go_json(&body);
            page.tickets
        }
    };
    assert_eq!(
        ids(&list("destination=moon&status=scheduled&_=1").await),
        [moon.id.as_str()]
    );
    assert_eq!(list("").await.len(), 2);
    assert_eq!(ids(&list("destination=mars").await), [mars.id.as_str()]);
    assert_eq!(list("status=scheduled").await.len(), 2);
    assert!(list("status=cancelled").await.is_empty());
    assert_eq!(ids(&list("first_name=ad&lastName=LOVE").await).len(), 2);

    // The Go service's cancel request carries a body of unrelated fields.
    let (status, cancelled) = send_json(
        app.client
            .patch(app.url(&format!("/v1/bookings/{}/cancel", moon.id)))
            .json(&json!({"reason": "changed my mind", "notify": true})),
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    let cancelled: go::TicketId = go_json(&cancelled);
    assert_eq!(cancelled.id, moon.id);
    let (_, got) = app.get_json(&format!("/v1/bookings/{}", moon.id)).await;
    let got: go::Ticket = go_json(&got);
    assert_eq!(got.status, "cancelled");
    assert_eq!(ids(&list("status=cancelled").await), [moon.id.as_str()]);
    assert_eq!(
        ids(&list("destination=moon&status=scheduled&_=2").await),
        Vec::<&str>::new()
    );
}
