//! Booking over gRPC: every rule and error, and the rules under concurrency.

use std::collections::{HashMap, HashSet};

use chrono::{TimeZone, Utc};
use spacet::proto::{
    BookingRequest, CancellationReason, Destination, GetLaunchpadScheduleRequest,
    ListLaunchpadsRequest, ListTicketsRequest, TicketId, TicketStatus,
};
use tonic::{Code, Request};

use crate::helpers::{assert_reason, booking_request, pads, StatusDetails, TestApp};

#[tokio::test]
async fn a_booking_returns_a_confirmed_ticket_that_can_be_read_back() {
    let app = TestApp::spawn().await;
    let ticket = app
        .book_ok(pads::KSC_39A, "2049-03-02", Destination::Mars)
        .await;
    assert_eq!(ticket.first_name, "Ada");
    assert_eq!(ticket.ticket_status, TicketStatus::Confirmed as i32);
    assert_eq!(ticket.status, "scheduled");
    assert_eq!(ticket.destination_id, Destination::Mars as i32);
    assert_eq!(ticket.launchpad_id, pads::KSC_39A);
    assert_eq!(
        ticket.launch_date.as_ref().unwrap().seconds,
        Utc.with_ymd_and_hms(2049, 3, 2, 0, 0, 0)
            .unwrap()
            .timestamp()
    );
    assert!(ticket.created_at.is_some() && ticket.updated_at.is_some());
    assert_eq!(app.ticket(&ticket.id).await.unwrap(), ticket);
    let outbox: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT event_type, payload FROM outbox ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0, "TicketBooked");
    assert_eq!(outbox[0].1["ticket"]["id"], ticket.id);
}

#[tokio::test]
async fn every_invalid_field_is_named_at_once() {
    let app = TestApp::spawn().await;
    let request = BookingRequest {
        first_name: "R2D2".into(),
        last_name: "   ".into(),
        gender: 42,
        birthday: None,
        launchpad_id: "000000000000000000000000".into(),
        launch_date: None,
        destination_id: 99,
        request_id: String::new(),
        owner: String::new(),
    };
    let status = app.book(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut fields = status.violated_fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "birthday",
            "destination_id",
            "first_name",
            "gender",
            "last_name",
            "launch_date",
            "launchpad_id"
        ]
    );
    let count = app.count("SELECT count(*) FROM tickets").await;
    assert_eq!(count, 0, "nothing written");
}

#[tokio::test]
async fn names_from_many_languages_book_and_bad_dates_are_refused() {
    let app = TestApp::spawn().await;
    for (i, (first, last)) in [
        ("Zoë", "O'Neil"),
        ("Li", "Nguyễn"),
        ("Jean-Luc", "St. Pierre"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = booking_request(pads::KSC_39A, "2049-03-02", Destination::Mars);
        request.first_name = first.into();
        request.last_name = last.into();
        let ticket = app
            .book(request)
            .await
            .unwrap_or_else(|e| panic!("{first} {last}: {e:?} ({i})"));
        assert_eq!(ticket.last_name, last);
    }
    let cases = [
        (
            "birthday",
            spacet::api::convert::day_timestamp(
                chrono::NaiveDate::from_ymd_opt(1899, 12, 31).unwrap(),
            ),
        ),
        (
            "birthday",
            spacet::api::convert::day_timestamp(
                chrono::NaiveDate::from_ymd_opt(2048, 6, 2).unwrap(),
            ),
        ),
        (
            "launch_date",
            spacet::api::convert::day_timestamp(
                chrono::NaiveDate::from_ymd_opt(2048, 6, 1).unwrap(),
            ),
        ),
    ];
    for (field, value) in cases {
        let mut request = booking_request(pads::KSC_39A, "2049-03-02", Destination::Mars);
        match field {
            "birthday" => request.birthday = Some(value),
            _ => request.launch_date = Some(value),
        }
        let status = app.book(request).await.unwrap_err();
        assert_eq!(status.violated_fields(), [field], "{status:?}");
    }
}

#[tokio::test]
async fn the_launch_day_is_compared_with_today_at_the_pad() {
    let app = TestApp::spawn().await;
    // 02:00 UTC on June 2nd is still June 1st in Florida: June 2nd is bookable there.
    app.clock
        .set(Utc.with_ymd_and_hms(2048, 6, 2, 2, 0, 0).unwrap());
    app.book_ok(pads::KSC_39A, "2048-06-02", Destination::Mars)
        .await;
    app.clock
        .set(Utc.with_ymd_and_hms(2048, 6, 2, 12, 0, 0).unwrap());
    let status = app
        .book_err(pads::CCSFS_40, "2048-06-02", Destination::Mars)
        .await;
    assert_eq!(status.violated_fields(), ["launch_date"]);
}

#[tokio::test]
async fn inactive_and_unknown_launchpads_are_refused() {
    let app = TestApp::spawn().await;
    for pad in [pads::VAFB_3W, pads::STLS] {
        let status = app.book_err(pad, "2049-03-02", Destination::Mars).await;
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.reason().as_deref(), Some("LAUNCHPAD_INACTIVE"));
        assert!(status.message().contains(pad), "{}", status.message());
    }
    let status = app
        .book_err("5e9e4502f509094188566fff", "2049-03-02", Destination::Mars)
        .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.violated_fields(), ["launchpad_id"]);
}

#[tokio::test]
async fn a_pad_and_day_flies_one_destination_and_a_week_never_repeats_one() {
    let app = TestApp::spawn().await;
    let first = app
        .book_ok(pads::KSC_39A, "2049-03-02", Destination::Mars)
        .await;
    let joined = app
        .book_ok(pads::KSC_39A, "2049-03-02", Destination::Mars)
        .await;
    assert_ne!(first.id, joined.id);

    let taken = app
        .book_err(pads::KSC_39A, "2049-03-02", Destination::Moon)
        .await;
    assert_eq!(taken.code(), Code::FailedPrecondition);
    assert_eq!(taken.reason().as_deref(), Some("LAUNCHPAD_DAY_TAKEN"));
    assert!(
        taken.message().contains("2049-03-02") && taken.message().contains("MARS"),
        "{}",
        taken.message()
    );

    // 2049-03-02 is a Tuesday: Sunday the 7th is the same ISO week, Monday the 8th is not.
    let same_week = app
        .book_err(pads::KSC_39A, "2049-03-07", Destination::Mars)
        .await;
    assert_eq!(
        same_week.reason().as_deref(),
        Some("DESTINATION_USED_THIS_WEEK")
    );
    app.book_ok(pads::KSC_39A, "2049-03-08", Destination::Mars)
        .await;
    // Another pad has its own week.
    app.book_ok(pads::CCSFS_40, "2049-03-03", Destination::Mars)
        .await;
}

#[tokio::test]
async fn a_full_flight_refuses_the_next_passenger() {
    let app = TestApp::spawn_with(&[("SEATS_PER_FLIGHT", "2")]).await;
    for _ in 0..2 {
        app.book_ok(pads::KSC_39A, "2049-03-02", Destination::Europa)
            .await;
    }
    let full = app
        .book_err(pads::KSC_39A, "2049-03-02", Destination::Europa)
        .await;
    assert_eq!(full.code(), Code::FailedPrecondition);
    assert_eq!(full.reason().as_deref(), Some("FLIGHT_FULL"));
}

#[tokio::test]
async fn a_spacex_launch_on_the_pad_and_day_refuses_the_booking() {
    let app = TestApp::spawn().await;
    sqlx::query(
        "INSERT INTO spacex_launches (id, name, launchpad_id, date_utc, date_precision, upcoming, blocked_day)
         VALUES ('l1', 'Starlink 99', $1, '2049-03-03T02:00:00Z', 'hour', true, '2049-03-02')",
    )
    .bind(pads::KSC_39A)
    .execute(&app.pool)
    .await
    .unwrap();
    let status = app
        .book_err(pads::KSC_39A, "2049-03-02", Destination::Mars)
        .await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.reason().as_deref(), Some("SPACEX_CONFLICT"));
    assert!(status.message().contains("Starlink 99"));
    app.book_ok(pads::KSC_39A, "2049-03-03", Destination::Mars)
        .await;
}

#[tokio::test]
async fn cancelling_frees_the_seat_and_the_last_ticket_frees_the_day() {
    let app = TestApp::spawn().await;
    let a = app
        .book_ok(pads::KSC_39A, "2049-03-02", Destination::Mars)
        .await;
    let b = app
        .book_ok(pads::KSC_39A, "2049-03-02", Destination::Mars)
        .await;
    app.cancel(&a.id).await.unwrap();
    let cancelled = app.ticket(&a.id).await.unwrap();
    assert_eq!(cancelled.ticket_status, TicketStatus::Cancelled as i32);
    assert_eq!(cancelled.status, "cancelled");
    assert_eq!(
        cancelled.cancellation_reason,
        CancellationReason::UserRequested as i32
    );
    // The day is still Mars's while b holds a seat.
    let still = app
        .book_err(pads::KSC_39A, "2049-03-02", Destination::Moon)
        .await;
    assert_eq!(still.reason().as_deref(), Some("LAUNCHPAD_DAY_TAKEN"));
    app.cancel(&b.id).await.unwrap();
    // Cancelling again succeeds and changes nothing.
    let cancelled = app.ticket(&b.id).await.unwrap();
    app.cancel(&b.id).await.unwrap();
    assert_eq!(app.ticket(&b.id).await.unwrap(), cancelled);
    // Flight cancelled: the day and Mars are free again.
    app.book_ok(pads::KSC_39A, "2049-03-02", Destination::Moon)
        .await;
    app.book_ok(pads::KSC_39A, "2049-03-03", Destination::Mars)
        .await;
    let events: Vec<String> = sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        events,
        [
            "TicketBooked",
            "TicketBooked",
            "TicketCancelled",
            "TicketCancelled",
            "TicketBooked",
            "TicketBooked"
        ]
    );
}

#[tokio::test]
async fn unknown_and_malformed_ticket_ids_get_precise_codes() {
    let app = TestApp::spawn().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for status in [
        app.ticket(&unknown).await.unwrap_err(),
        app.cancel(&unknown).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound);
        assert_reason(&status, "TICKET_NOT_FOUND");
    }
    let malformed = app.cancel("42").await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(malformed.violated_fields(), ["id"]);
}

#[tokio::test]
async fn a_retried_booking_with_the_same_request_id_returns_the_same_ticket() {
    let app = TestApp::spawn().await;
    let mut request = booking_request(pads::KSC_39A, "2049-03-02", Destination::Mars);
    request.request_id = "retry-me-1".into();
    let first = app.book(request.clone()).await.unwrap();
    let second = app.book(request.clone()).await.unwrap();
    assert_eq!(first, second);

    // The same key through the metadata header.
    let mut by_header = Request::new(booking_request(
        pads::KSC_39A,
        "2049-03-02",
        Destination::Mars,
    ));
    by_header
        .metadata_mut()
        .insert("idempotency-key", "retry-me-1".parse().unwrap());
    let third = app
        .grpc()
        .await
        .launch_booking(by_header)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(third.id, first.id);

    // The same key for another request is refused.
    request.first_name = "Grace".into();
    let conflict = app.book(request).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    assert_reason(&conflict, "IDEMPOTENCY_KEY_REUSED");

    // Racing retries still give one ticket.
    let mut racing = booking_request(pads::KSC_39A, "2049-03-02", Destination::Mars);
    racing.request_id = "race-1".into();
    let answers = futures::future::join_all((0..10).map(|_| app.book(racing.clone()))).await;
    let ids: HashSet<String> = answers.into_iter().map(|a| a.unwrap().id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.count("SELECT count(*) FROM tickets").await, 2);
}

#[tokio::test]
async fn fifty_concurrent_bookings_for_one_pad_and_day_get_one_flight_within_its_seats() {
    let app = TestApp::spawn_with(&[("SEATS_PER_FLIGHT", "30"), ("PG_POOL_MAX", "20")]).await;
    let destinations = [Destination::Mars, Destination::Moon, Destination::Titan];
    let answers = futures::future::join_all((0..50).map(|i| {
        app.book(booking_request(
            pads::KSC_39A,
            "2049-03-02",
            destinations[i % 3],
        ))
    }))
    .await;
    let mut confirmed = Vec::new();
    for answer in answers {
        match answer {
            Ok(ticket) => confirmed.push(ticket),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(
                    matches!(
                        status.reason().as_deref(),
                        Some("LAUNCHPAD_DAY_TAKEN" | "FLIGHT_FULL")
                    ),
                    "{status:?}"
                );
            }
        }
    }
    let flights: Vec<(uuid::Uuid, i32)> =
        sqlx::query_as("SELECT id, seats_booked FROM flights WHERE status = 'scheduled'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(flights.len(), 1, "exactly one flight");
    let on_flight: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tickets WHERE flight_id = $1 AND status = 'CONFIRMED'",
    )
    .bind(flights[0].0)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        on_flight as usize,
        confirmed.len(),
        "every confirmed ticket is on the flight"
    );
    assert_eq!(flights[0].1 as usize, confirmed.len());
    assert!(
        confirmed.len() <= 30,
        "{} tickets for 30 seats",
        confirmed.len()
    );
    let destinations: HashSet<i32> = confirmed.iter().map(|t| t.destination_id).collect();
    assert_eq!(destinations.len(), 1);
}

#[tokio::test]
async fn concurrent_bookings_over_one_week_never_repeat_a_destination() {
    let app = TestApp::spawn_with(&[("PG_POOL_MAX", "20")]).await;
    // Monday 2049-03-01 to Sunday 2049-03-07, every destination wanted on every day.
    let mut attempts = Vec::new();
    for day in 1..=7 {
        for destination in [
            Destination::Mars,
            Destination::Moon,
            Destination::Pluto,
            Destination::Europa,
        ] {
            attempts.push((format!("2049-03-{day:02}"), destination));
        }
    }
    let answers = futures::future::join_all(
        attempts
            .iter()
            .map(|(day, destination)| app.book(booking_request(pads::VAFB_4E, day, *destination))),
    )
    .await;
    assert!(answers.iter().any(|a| a.is_ok()));
    let flights: Vec<(chrono::NaiveDate, String)> =
        sqlx::query_as("SELECT launch_day, destination FROM flights WHERE status = 'scheduled'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let mut per_destination: HashMap<String, usize> = HashMap::new();
    for (_, destination) in &flights {
        *per_destination.entry(destination.clone()).or_default() += 1;
    }
    assert!(per_destination.values().all(|n| *n == 1), "{flights:?}");
    let days: HashSet<_> = flights.iter().map(|(d, _)| *d).collect();
    assert_eq!(days.len(), flights.len(), "one flight per day");
}

#[tokio::test]
async fn paging_with_limit_7_while_tickets_change_returns_every_lasting_ticket_once() {
    let app = TestApp::spawn_with(&[("SEATS_PER_FLIGHT", "5000"), ("PG_POOL_MAX", "20")]).await;
    let mut lasting = Vec::new();
    for _ in 0..20 {
        let batch = futures::future::join_all(
            (0..50).map(|_| app.book_ok(pads::KSC_39A, "2049-03-02", Destination::Mars)),
        )
        .await;
        lasting.extend(batch.into_iter().map(|t| t.id));
    }
    // Extra tickets that get cancelled while we page.
    let mut doomed = Vec::new();
    for _ in 0..50 {
        doomed.push(
            app.book_ok(pads::KSC_39A, "2049-03-02", Destination::Mars)
                .await
                .id,
        );
    }
    let churn = {
        let grpc = app.grpc().await;
        tokio::spawn(async move {
            let mut grpc = grpc;
            for id in doomed {
                grpc.cancel_booking(TicketId { id }).await.unwrap();
                grpc.launch_booking(booking_request(
                    pads::KSC_39A,
                    "2049-03-02",
                    Destination::Mars,
                ))
                .await
                .unwrap();
            }
        })
    };
    let mut grpc = app.grpc().await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = grpc
            .list_bookings(ListTicketsRequest {
                limit: 7,
                cursor: Some(cursor.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.tickets.len() <= 7);
        for t in page.tickets {
            *seen.entry(t.id).or_default() += 1;
        }
        pages += 1;
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    churn.await.unwrap();
    assert!(pages >= 1000 / 7);
    for id in &lasting {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "ticket {id} seen {:?} times",
            seen.get(id)
        );
    }
    assert!(seen.values().all(|n| *n == 1), "a ticket was repeated");
}

#[tokio::test]
async fn listing_filters_and_rejects_bad_cursors() {
    let app = TestApp::spawn().await;
    let mut zoe = booking_request(pads::KSC_39A, "2049-03-02", Destination::Mars);
    zoe.first_name = "Zoë".into();
    zoe.last_name = "Okafor".into();
    let zoe = app.book(zoe).await.unwrap();
    let moon = app
        .book_ok(pads::CCSFS_40, "2049-04-02", Destination::Moon)
        .await;
    app.cancel(&moon.id).await.unwrap();

    let grpc = app.grpc().await;
    let list = |req: ListTicketsRequest| {
        let mut grpc = grpc.clone();
        async move {
            grpc.list_bookings(req).await.map(|r| {
                r.into_inner()
                    .tickets
                    .into_iter()
                    .map(|t| t.id)
                    .collect::<Vec<_>>()
            })
        }
    };
    let day = |d| {
        spacet::api::convert::day_timestamp(chrono::NaiveDate::from_ymd_opt(2049, 4, d).unwrap())
    };
    for (filter, expected) in [
        (
            ListTicketsRequest {
                last_name: Some("oka".into()),
                ..Default::default()
            },
            &zoe,
        ),
        (
            ListTicketsRequest {
                first_name: Some("ZOË".into()),
                ..Default::default()
            },
            &zoe,
        ),
        (
            ListTicketsRequest {
                ticket_status: Some(TicketStatus::Cancelled as i32),
                ..Default::default()
            },
            &moon,
        ),
        (
            ListTicketsRequest {
                destination_id: Some(Destination::Mars as i32),
                ..Default::default()
            },
            &zoe,
        ),
        (
            ListTicketsRequest {
                launchpad_id: Some(pads::CCSFS_40.into()),
                ..Default::default()
            },
            &moon,
        ),
        (
            ListTicketsRequest {
                launch_date_from: Some(day(1)),
                launch_date_to: Some(day(30)),
                ..Default::default()
            },
            &moon,
        ),
    ] {
        let found = list(filter.clone()).await.unwrap();
        assert_eq!(found, [expected.id.as_str()], "{filter:?}");
    }
    let bad = list(ListTicketsRequest {
        cursor: Some("not-a-cursor".into()),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(bad.violated_fields(), ["cursor"]);
    let negative = list(ListTicketsRequest {
        limit: -1,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(negative.violated_fields(), ["limit"]);
    assert_eq!(
        list(ListTicketsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        2
    );
}

/// A cursor is checked whole before any SQL runs: one that decodes but holds a
/// time PostgreSQL cannot store (or one outside years 1–9999) is the client's
/// mistake, not an internal error.
#[tokio::test]
async fn a_tampered_cursor_is_invalid_argument_naming_cursor() {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let app = TestApp::spawn().await;
    for (day, destination) in [
        ("2049-03-02", Destination::Mars),
        ("2049-03-03", Destination::Moon),
    ] {
        app.book_ok(pads::KSC_39A, day, destination).await;
    }
    let mut grpc = app.grpc().await;
    let page = grpc
        .list_bookings(ListTicketsRequest {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(&page.next_cursor).unwrap()).unwrap();
    let id = text.rsplit('|').next().unwrap().to_string();
    for micros in [
        // Year -10000: chrono has it, PostgreSQL does not.
        "-377705116800000000".to_string(),
        // Year 0 and year 10000: outside 1–9999.
        "-62162035200000000".to_string(),
        "253402300800000000".to_string(),
        i64::MIN.to_string(),
    ] {
        let cursor = URL_SAFE_NO_PAD.encode(format!("v1|{micros}|{id}"));
        let status = grpc
            .list_bookings(ListTicketsRequest {
                cursor: Some(cursor),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{micros}: {status:?}");
        assert_eq!(status.violated_fields(), ["cursor"], "{micros}");
    }
    // The edges of the range are still cursors: 0001-01-01 and 9999-12-31T23:59:59.999999.
    for micros in ["-62135596800000000", "253402300799999999"] {
        let cursor = URL_SAFE_NO_PAD.encode(format!("v1|{micros}|{id}"));
        grpc.list_bookings(ListTicketsRequest {
            cursor: Some(cursor),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{micros}: {e:?}"));
    }
}

#[tokio::test]
async fn launchpads_and_their_schedule_show_what_can_be_booked() {
    let app = TestApp::spawn().await;
    let mut grpc = app.grpc().await;
    let pads_list = grpc
        .list_launchpads(ListLaunchpadsRequest {})
        .await
        .unwrap()
        .into_inner()
        .launchpads;
    assert_eq!(pads_list.len(), 6);
    let ksc = pads_list.iter().find(|p| p.id == pads::KSC_39A).unwrap();
    assert_eq!(
        (
            ksc.name.as_str(),
            ksc.timezone.as_str(),
            ksc.status.as_str()
        ),
        ("KSC LC 39A", "America/New_York", "active")
    );
    assert!(ksc.bookable);

    app.book_ok(pads::KSC_39A, "2049-03-02", Destination::Mars)
        .await;
    sqlx::query(
        "INSERT INTO spacex_launches (id, name, launchpad_id, date_utc, date_precision, upcoming, blocked_day)
         VALUES ('firm', 'CRS-99', $1, '2049-03-04T15:00:00Z', 'hour', true, '2049-03-04'),
                ('vague', 'Tentative', $1, '2049-03-01T00:00:00Z', 'month', true, NULL)",
    )
    .bind(pads::KSC_39A)
    .execute(&app.pool)
    .await
    .unwrap();
    let schedule = grpc
        .get_launchpad_schedule(GetLaunchpadScheduleRequest {
            id: pads::KSC_39A.into(),
            from: "2049-03-01".into(),
            to: "2049-03-08".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(schedule.days.len(), 8);
    let day = |d: &str| schedule.days.iter().find(|x| x.date == d).unwrap();
    let flight = day("2049-03-02").flight.as_ref().unwrap();
    assert_eq!(
        (
            flight.destination_id,
            flight.seats_booked,
            flight.seats_left
        ),
        (Destination::Mars as i32, 1, 99)
    );
    assert!(day("2049-03-02").bookable);
    assert!(
        !day("2049-03-03")
            .free_destinations
            .contains(&(Destination::Mars as i32)),
        "Mars flies that week"
    );
    assert!(
        day("2049-03-08")
            .free_destinations
            .contains(&(Destination::Mars as i32)),
        "a new week"
    );
    assert!(!day("2049-03-04").bookable, "SpaceX owns the 4th");
    assert!(day("2049-03-04")
        .spacex_launches
        .iter()
        .any(|l| l.name == "CRS-99" && !l.tentative));
    assert!(day("2049-03-05")
        .spacex_launches
        .iter()
        .any(|l| l.name == "Tentative" && l.tentative));
    assert!(
        day("2049-03-05").bookable,
        "a tentative launch blocks nothing"
    );

    let too_long = grpc
        .get_launchpad_schedule(GetLaunchpadScheduleRequest {
            id: pads::KSC_39A.into(),
            from: "2049-03-01".into(),
            to: "2049-06-30".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(too_long.violated_fields(), ["to"]);
    let unknown = grpc
        .get_launchpad_schedule(GetLaunchpadScheduleRequest {
            id: "5e9e4502f509094188566fff".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_reason(&unknown, "LAUNCHPAD_NOT_FOUND");
}
