//! The HTTP/JSON gateway: grpc-gateway's JSON, status codes and error bodies.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{assert_body_reason, error_fields, pads, send_json, TestApp, ROCKET_SORTS};

fn go_example() -> Value {
    json!({"firstName":"Ada","lastName":"Lovelace","gender":"FEMALE","birthday":"1990-12-01T00:00:00Z",
           "launchpadId":"5e9e4502f509094188566f88","launchDate":"2049-12-01T00:00:00Z","destinationId":"MARS"})
}

fn assert_error_body(body: &Value, code: i64) {
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["details"].is_array(), "{body}");
}

#[tokio::test]
async fn the_go_services_example_request_works_unchanged() {
    let app = TestApp::spawn().await;
    let (status, ticket) = app.post_json("/v1/bookings", &go_example()).await;
    assert_eq!(status, 200, "{ticket}");
    assert_eq!(ticket["firstName"], "Ada");
    assert_eq!(ticket["destinationId"], "MARS");
    assert_eq!(ticket["gender"], "FEMALE");
    assert_eq!(ticket["status"], "scheduled");
    assert_eq!(ticket["ticketStatus"], "CONFIRMED");
    assert_eq!(ticket["launchpadId"], pads::KSC_39A);
    // Timestamps as protojson writes them: UTC with "Z".
    assert_eq!(ticket["launchDate"], "2049-12-01T00:00:00Z");
    assert_eq!(ticket["birthday"], "1990-12-01T00:00:00Z");
    for field in ["createdAt", "updatedAt"] {
        let text = ticket[field].as_str().unwrap();
        assert!(text.ends_with('Z'), "{field}: {text}");
        chrono::DateTime::parse_from_rfc3339(text).unwrap();
    }

    let id = ticket["id"].as_str().unwrap();
    let path = format!("/v1/bookings/{id}");
    assert_eq!(app.get_json(&path).await.1, ticket);
    let (status, cancelled) = send_json(app.client.patch(app.url(&format!("{path}/cancel")))).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled, json!({"id": id}));
    let (_, got) = app.get_json(&path).await;
    assert_eq!(got["status"], "cancelled");
    assert_eq!(got["ticketStatus"], "CANCELLED");
    assert_eq!(got["cancellationReason"], "USER_REQUESTED");
}

#[tokio::test]
async fn snake_case_names_and_enum_numbers_are_accepted() {
    let app = TestApp::spawn().await;
    let body = json!({"first_name":"Zoë","last_name":"O'Neil","gender":2,"birthday":"1990-12-01T00:00:00Z",
                      "launchpad_id": pads::KSC_39A,"launch_date":"2049-12-01T00:00:00Z","destination_id":1});
    let (status, ticket) = app.post_json("/v1/bookings", &body).await;
    assert_eq!(status, 200, "{ticket}");
    // Destination numbers are the Go service's: 1 is MOON.
    assert_eq!(
        (ticket["gender"].as_str(), ticket["destinationId"].as_str()),
        (Some("FEMALE"), Some("MOON"))
    );
}

#[tokio::test]
async fn domain_errors_get_grpc_gateway_statuses_and_details() {
    let app = TestApp::spawn_with(&[("SEATS_PER_FLIGHT", "1")]).await;
    // Validation: 400 with every field violation.
    let (status, body) = app
        .post_json(
            "/v1/bookings",
            &json!({"firstName":"4","destinationId":"MARS"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_error_body(&body, 3);
    assert_eq!(
        body["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert_body_reason(&body, "FIELD_VIOLATIONS");
    let fields = error_fields(&body);
    assert_eq!(
        fields.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "first_name",
            "last_name",
            "birthday",
            "launchpad_id",
            "launch_date"
        ])
    );
    // Business rule: 400 FAILED_PRECONDITION with ErrorInfo.
    assert_eq!(app.post_json("/v1/bookings", &go_example()).await.0, 200);
    let (status, body) = app.post_json("/v1/bookings", &go_example()).await;
    assert_eq!(status, 400);
    assert_error_body(&body, 9);
    assert_eq!(
        body["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(body["details"][0]["reason"], "FLIGHT_FULL");
    assert_body_reason(&body, "FLIGHT_FULL");
    assert_eq!(
        body["details"][0]["metadata"]["launchpad_id"],
        pads::KSC_39A
    );
    // Not found: 404.
    let (status, body) = app
        .get_json(&format!("/v1/bookings/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    assert_error_body(&body, 5);
    assert_body_reason(&body, "TICKET_NOT_FOUND");
    // Malformed id: 400.
    let (status, body) = app.get_json("/v1/bookings/nope").await;
    assert_eq!(status, 400);
    assert_body_reason(&body, "FIELD_VIOLATIONS");
    assert_eq!(error_fields(&body), ["id"]);
}

#[tokio::test]
async fn the_idempotency_key_header_makes_retries_safe() {
    let app = TestApp::spawn().await;
    let send = |body: Value| {
        send_json(
            app.client
                .post(app.url("/v1/bookings"))
                .header("Idempotency-Key", "order-77")
                .json(&body),
        )
    };
    let (_, first) = send(go_example()).await;
    let (_, second) = send(go_example()).await;
    assert_eq!(first["id"], second["id"]);
    let mut other = go_example();
    other["firstName"] = json!("Grace");
    let (status, conflict) = send(other).await;
    assert_eq!(status, 409);
    assert_error_body(&conflict, 6);
    assert_body_reason(&conflict, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(
        conflict["details"][0]["metadata"]["idempotency_key"],
        "order-77"
    );
}

#[tokio::test]
async fn transport_errors_get_json_bodies_and_the_right_status() {
    let app = TestApp::spawn_with(&[("HTTP_BODY_LIMIT", "2048")]).await;
    let post = || app.client.post(app.url("/v1/bookings"));
    let raw = |content_type: &str, body: &'static str| {
        post().header("content-type", content_type).body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            raw("application/json", "{\"firstName\":"),
            400,
            "MALFORMED_BODY",
        ),
        (raw("application/json", "[1,2]"), 400, "MALFORMED_BODY"),
        (raw("text/plain", "not json"), 400, "MALFORMED_BODY"),
        (
            post().json(&json!({"firstName": "a".repeat(4096)})),
            413,
            "BODY_TOO_LARGE",
        ),
        // The booking's fields are missing.
        (
            post().json(&json!({"favouriteColour": "red"})),
            400,
            "FIELD_VIOLATIONS",
        ),
        (
            post().json(&json!({"gender": "ROBOT"})),
            400,
            "FIELD_VIOLATIONS",
        ),
        (
            app.client.get(app.url("/v1/nothing-here")),
            404,
            "ROUTE_NOT_FOUND",
        ),
        (
            app.client.delete(app.url("/v1/bookings")),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            app.client.put(app.url("/v1/launchpads")),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            app.client.get(app.url("/v1/bookings?limit=abc")),
            400,
            "FIELD_VIOLATIONS",
        ),
        (
            app.client.get(app.url("/v1/bookings?ticketStatus=MAYBE")),
            400,
            "FIELD_VIOLATIONS",
        ),
        (
            app.client.get(app.url("/v1/bookings?destinationId=9")),
            400,
            "FIELD_VIOLATIONS",
        ),
        (
            app.client.get(app.url("/v1/bookings?cursor=%%%")),
            400,
            "FIELD_VIOLATIONS",
        ),
    ];
    for (request, expected, reason) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        let text = response.text().await.unwrap();
        assert_eq!(status, expected, "{text}");
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}: {text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_error_body(&body, body["code"].as_i64().unwrap());
        assert_body_reason(&body, reason);
        // No retry advice for what a retry cannot fix.
        assert!(crate::helpers::body_retry_delay(&body).is_none(), "{body}");
    }
    // An unknown field is discarded, as grpc-gateway does: the violations name
    // the booking's missing fields, not it.
    let (_, unknown) = app
        .post_json("/v1/bookings", &json!({"favouriteColour": "red"}))
        .await;
    assert!(
        !error_fields(&unknown).contains(&"favouriteColour".to_string()),
        "{unknown}"
    );
    assert!(error_fields(&unknown).contains(&"first_name".to_string()));
}

#[tokio::test]
async fn listing_takes_grpc_gateway_query_parameters() {
    let app = TestApp::spawn().await;
    for day in ["2049-12-01", "2049-12-02", "2049-12-03"] {
        let mut body = go_example();
        body["launchDate"] = json!(format!("{day}T00:00:00Z"));
        body["destinationId"] = json!(
            ["MARS", "MOON", "PLUTO"]
                [day.ends_with('1') as usize + day.ends_with('3') as usize * 2]
        );
        assert_eq!(app.post_json("/v1/bookings", &body).await.0, 200);
    }
    let (_, page) = app
        .get_json(&format!(
            "/v1/bookings?ticketStatus=CONFIRMED&launchpad_id={}&limit=2",
            pads::KSC_39A
        ))
        .await;
    assert_eq!(page["tickets"].as_array().unwrap().len(), 2);
    let cursor = page["nextCursor"].as_str().unwrap();
    assert!(!cursor.is_empty());
    let (_, rest) = app
        .get_json(&format!("/v1/bookings?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(rest["nextCursor"], "");
    // camelCase parameter names, enum numbers and timestamps work as in grpc-gateway.
    let (_, filtered) = app
        .get_json("/v1/bookings?destinationId=1&launchDateFrom=2049-12-01T00:00:00Z&launch_date_to=2049-12-31T00:00:00Z")
        .await;
    assert_eq!(
        filtered["tickets"].as_array().unwrap().len(),
        1,
        "{filtered}"
    );
    assert_eq!(filtered["tickets"][0]["destinationId"], "MOON");
}

#[tokio::test]
async fn launchpads_schedule_and_admin_routes_answer() {
    let app = TestApp::spawn().await;
    let (_, pads_json) = app.get_json("/v1/launchpads").await;
    assert_eq!(pads_json["launchpads"].as_array().unwrap().len(), 6);
    let (status, schedule) = app
        .get_json(&format!(
            "/v1/launchpads/{}/schedule?from=2049-03-01&to=2049-03-07",
            pads::KSC_39A
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(schedule["days"].as_array().unwrap().len(), 7);
    assert_eq!(schedule["days"][0]["date"], "2049-03-01");
    assert_eq!(
        schedule["days"][0]["freeDestinations"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let (status, body) = app
        .get_json(&format!(
            "/v1/launchpads/{}/schedule?from=yesterday",
            pads::KSC_39A
        ))
        .await;
    assert_eq!(status, 400);
    assert_body_reason(&body, "FIELD_VIOLATIONS");
    let (status, body) = app
        .get_json("/v1/launchpads/5e9e4502f509094188566f00/schedule")
        .await;
    assert_eq!(status, 404);
    assert_body_reason(&body, "LAUNCHPAD_NOT_FOUND");
    // The admin sync answers with JSON whatever SpaceX does (here it is unreachable).
    let sync = app
        .client
        .post(app.url("/v1/admin/sync"))
        .send()
        .await
        .unwrap();
    assert!(sync.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test]
async fn large_answers_are_gzipped_and_cors_is_configurable() {
    let app = TestApp::spawn_with(&[("CORS_ALLOWED_ORIGINS", "https://dashboard.example")]).await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .header("origin", "https://dashboard.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://dashboard.example"
    );
    let plain = app
        .client
        .get(app.url("/healthz"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(
        plain.headers().get("content-encoding").is_none(),
        "small answers are not compressed"
    );

    let no_cors = TestApp::spawn().await;
    let response = no_cors
        .client
        .get(no_cors.url("/healthz"))
        .header("origin", "https://x.example")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "CORS is off by default"
    );
}

#[tokio::test]
async fn the_openapi_document_and_the_router_agree() {
    let app = TestApp::spawn().await;
    let (_, served) = app.get_json("/openapi.json").await;
    let on_disk: Value = serde_json::from_str(include_str!("../../openapi/spacet.json")).unwrap();
    assert_eq!(served, on_disk);
    assert_eq!(served["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, operations) in served["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            documented.insert((method.to_string(), path.to_string()));
        }
    }
    let routed: BTreeSet<(String, String)> = spacet::api::http_routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, routed,
        "every route documented, every documented route served"
    );
    // And the router really serves each one (not 404/405).
    for (method, path) in &routed {
        let url = app.url(
            &path
                .replace("{id}", pads::KSC_39A)
                .replace("{channel}", &uuid::Uuid::new_v4().to_string()),
        );
        let request = app
            .client
            .request(method.to_uppercase().parse().unwrap(), url);
        let status = request.send().await.unwrap().status().as_u16();
        assert!(status != 405, "{method} {path} gave {status}");
        if status == 404 {
            // A 404 must come from the handler (unknown resource), not from the router.
            assert!(path.contains('{'), "{method} {path} is not routed");
        }
    }
}

/// chrono reads years of up to six digits; every date the API takes is held to
/// years 1–9999 (400 naming the field), and no window runs past 9999-12-31.
#[tokio::test]
async fn dates_outside_years_1_to_9999_are_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let schedule = |query: &str| format!("/v1/launchpads/{}/schedule?{query}", pads::KSC_39A);
    for (query, field) in [
        // The request of issue 14: `from + 27 days` overflowed and reset the connection.
        ("from=%2B262142-12-31", "from"),
        ("to=%2B262142-12-31&from=%2B262142-12-01", "from"),
        ("from=-262143-01-01", "from"),
        ("from=0000-12-31", "from"),
        ("from=9999-12-31&to=%2B10000-01-02", "to"),
    ] {
        let (status, body) = app.get_json(&schedule(query)).await;
        assert_eq!(status, 400, "{query}");
        assert_error_body(&body, 3);
        assert_body_reason(&body, "FIELD_VIOLATIONS");
        assert!(
            error_fields(&body).iter().any(|f| f == field),
            "{query}: {body}"
        );
    }
    // The last days there are still answer, the default window cut at 9999-12-31.
    let (_, last) = app.get_json(&schedule("from=9999-12-30")).await;
    let days = last["days"].as_array().unwrap_or_else(|| panic!("{last}"));
    assert_eq!(days.len(), 2, "{last}");
    assert_eq!(days[1]["date"], "9999-12-31");
    // Booking dates and list filters too.
    let mut far = go_example();
    far["launchDate"] = json!("+10000-01-01T00:00:00Z");
    let (status, body) = app.post_json("/v1/bookings", &far).await;
    assert_eq!(status, 400);
    assert_body_reason(&body, "FIELD_VIOLATIONS");
    let (status, body) = app
        .get_json("/v1/bookings?launchDateFrom=0000-06-01T00:00:00Z")
        .await;
    assert_eq!(status, 400);
    assert_body_reason(&body, "FIELD_VIOLATIONS");
}

/// A handler that panics gets grpc-gateway's INTERNAL body, not a reset connection,
/// and the panic's text stays in the log.
#[tokio::test]
async fn a_panicking_handler_answers_500_with_the_json_error_body() {
    use spacet::api::access_log::{AccessLogLayer, Protocol};
    let router = axum::Router::new()
        .route(
            "/boom",
            axum::routing::get(|| async {
                if true {
                    panic!("secret detail of the crash");
                }
                "unreachable"
            }),
        )
        .layer(spacet::api::CatchPanicLayer(Protocol::Http))
        .layer(AccessLogLayer(Protocol::Http));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let response = reqwest::get(format!("http://{address}/boom"))
        .await
        .expect("an answer, not a reset connection");
    assert_eq!(response.status(), 500);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": 13, "message": "internal error", "details": [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "INTERNAL",
            "domain": "spacet.v1",
            "metadata": {},
        }]})
    );
}

/// Any cursor string gets 200 or 400 from both lists, never a 5xx: random text,
/// and cursors in the real format with their fields altered.
#[test]
fn no_cursor_string_makes_a_list_answer_5xx() {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use proptest::{
        prelude::*,
        test_runner::{Config, TestRunner},
    };

    #[derive(Debug, Clone)]
    enum Case {
        Bookings(String),
        Rockets {
            sort: String,
            order: String,
            cursor: String,
        },
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, ticket_ids, channels, real) = runtime.block_on(async {
        let app = TestApp::spawn().await;
        let mut ticket_ids = Vec::new();
        for (day, destination) in [
            ("2049-12-01", "MARS"),
            ("2049-12-02", "MOON"),
            ("2049-12-03", "PLUTO"),
        ] {
            let mut body = go_example();
            body["launchDate"] = json!(format!("{day}T00:00:00Z"));
            body["destinationId"] = json!(destination);
            let (status, ticket) = app.post_json("/v1/bookings", &body).await;
            assert_eq!(status, 200, "{ticket}");
            ticket_ids.push(ticket["id"].as_str().unwrap().to_string());
        }
        let mut channels = Vec::new();
        for (i, (rocket_type, speed)) in [("Falcon-9", 500), ("Starship", 900), ("Falcon-9", 700)]
            .into_iter()
            .enumerate()
        {
            let channel = uuid::Uuid::new_v4();
            let message = json!({
                "metadata": {"channel": channel, "messageNumber": 1,
                             "messageTime": format!("2022-02-02T19:3{i}:05.86337+01:00"),
                             "messageType": "RocketLaunched"},
                "message": {"type": rocket_type, "launchSpeed": speed, "mission": "ARTEMIS"},
            });
            assert_eq!(app.post_json("/messages", &message).await.0, 201);
            channels.push(channel.to_string());
        }
        // A real cursor of every sort and order, split into its fields.
        let mut real = Vec::new();
        for sort in ROCKET_SORTS {
            for order in ["asc", "desc"] {
                let query = [("sort", sort), ("order", order), ("limit", "1")];
                // The plain route takes the sorts by their lowercase names.
                let (_, page) = send_json(app.client.get(app.url("/rockets")).query(&query)).await;
                let cursor = page["nextCursor"].as_str().unwrap();
                let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).unwrap()).unwrap();
                let fields: Vec<String> = text.splitn(5, '|').map(str::to_string).collect();
                assert_eq!(fields.len(), 5, "{text}");
                real.push(fields);
            }
        }
        (app, ticket_ids, channels, real)
    });

    let uuid_text = prop_oneof![
        proptest::sample::select(ticket_ids.clone()),
        proptest::sample::select(channels.clone()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        "[0-9a-fA-F-]{0,40}",
    ];
    let integer = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        // Microseconds of years 1–9999, and small numbers (speeds).
        (-62_135_596_800_000_000i64..253_402_300_800_000_000).prop_map(|n| n.to_string()),
        (-2000i64..2000).prop_map(|n| n.to_string()),
        // Years 0, 1, 9999, 10000 and far out of PostgreSQL's range, in microseconds.
        proptest::sample::select(vec![
            i64::MIN,
            i64::MAX,
            -377_705_116_800_000_000,
            -62_167_219_200_000_000,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            0,
        ])
        .prop_map(|n| n.to_string()),
        "[-+ 0-9eE.]{0,25}",
    ];
    let timestamp = (
        prop_oneof![
            -300_000i32..300_000,
            -1i32..=1,
            9998i32..=10_001,
            1900i32..2100
        ],
        0u32..14,
        0u32..33,
        "(Z|[+-][0-9]{2}:[0-9]{2}|)",
        "(\\.[0-9]{0,9})?",
    )
        .prop_map(|(year, month, day, offset, fraction)| {
            let year = if (0..=9999).contains(&year) {
                format!("{year:04}")
            } else {
                format!("{year:+}")
            };
            format!("{year}-{month:02}-{day:02}T12:34:56{fraction}{offset}")
        });
    let key = prop_oneof![
        integer.clone(),
        timestamp,
        uuid_text.clone(),
        proptest::sample::select(vec![
            "-infinity",
            "infinity",
            "now",
            "epoch",
            "",
            "\0",
            "Falcon-9",
            "exploded",
            "a|b",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ];
    let sort_name = prop_oneof![
        4 => proptest::sample::select(ROCKET_SORTS.to_vec()).prop_map(str::to_string),
        1 => "[a-zA-Z]{0,12}",
    ];
    let order_name = prop_oneof![
        4 => proptest::sample::select(vec!["asc", "desc"]).prop_map(str::to_string),
        1 => "[a-z]{0,5}",
    ];
    let random_text = prop_oneof![any::<String>(), "[A-Za-z0-9_=-]{0,120}"];
    let booking_cursor = prop_oneof![
        1 => random_text.clone(),
        3 => (
            proptest::sample::select(vec!["v1", "v1", "v1", "v1", "v2", ""]),
            integer,
            uuid_text.clone(),
            prop_oneof![3 => Just(String::new()), 1 => "\\|[a-z0-9]{0,4}"],
        )
            .prop_map(|(version, micros, id, extra)| {
                URL_SAFE_NO_PAD.encode(format!("{version}|{micros}|{id}{extra}"))
            }),
    ];
    // A real cursor with one field replaced (index 1 sort, 2 order, 3 channel,
    // 4 key), or none; sent with the sort and order it names.
    let altered = (
        proptest::sample::select(real),
        0usize..6,
        prop_oneof![
            sort_name.clone(),
            order_name.clone(),
            uuid_text.clone(),
            key.clone()
        ],
    )
        .prop_map(|(mut fields, index, value)| {
            if (1..=4).contains(&index) {
                fields[index] = value;
            }
            let cursor = URL_SAFE_NO_PAD.encode(fields.join("|"));
            Case::Rockets {
                sort: fields[1].clone(),
                order: fields[2].clone(),
                cursor,
            }
        });
    let rocket_case = prop_oneof![
        2 => altered,
        1 => (
            sort_name.clone(),
            order_name.clone(),
            random_text.clone()
        )
            .prop_map(|(sort, order, cursor)| Case::Rockets {
                sort,
                order,
                cursor
            }),
        // A cursor in the real format, mostly sent with the sort and order it names.
        2 => (
            proptest::sample::select(vec!["r1", "r1", "r1", "r0"]),
            sort_name.clone(),
            order_name.clone(),
            uuid_text,
            key,
            proptest::bool::weighted(0.8),
            sort_name,
            order_name,
        )
            .prop_map(
                |(version, sort, order, channel, key, same, other_sort, other_order)| {
                    let cursor = URL_SAFE_NO_PAD
                        .encode(format!("{version}|{sort}|{order}|{channel}|{key}"));
                    let (sort, order) = if same {
                        (sort, order)
                    } else {
                        (other_sort, other_order)
                    };
                    Case::Rockets {
                        sort,
                        order,
                        cursor,
                    }
                }
            ),
    ];
    let strategy = prop_oneof![
        2 => booking_cursor.prop_map(Case::Bookings),
        3 => rocket_case,
    ];

    let mut runner = TestRunner::new(Config {
        cases: 128,
        // Nothing written into the source tree; a failure prints its case.
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |case| {
        let request = match &case {
            Case::Bookings(cursor) => app
                .client
                .get(app.url("/v1/bookings"))
                .query(&[("cursor", cursor.as_str()), ("limit", "1")]),
            Case::Rockets {
                sort,
                order,
                cursor,
            } => app.client.get(app.url("/rockets")).query(&[
                ("cursor", cursor.as_str()),
                ("sort", sort.as_str()),
                ("order", order.as_str()),
                ("limit", "1"),
            ]),
        };
        let (status, body) = runtime.block_on(async {
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        });
        prop_assert!(status == 200 || status == 400, "{case:?} → {status} {body}");
        if status == 400 {
            let body: Value = serde_json::from_str(&body).unwrap();
            let reason = crate::helpers::body_reason(&body);
            prop_assert_eq!(reason.as_deref(), Some("FIELD_VIOLATIONS"));
            // The fields named (cursor, sort or order) are the case's.
            let fields = error_fields(&body);
            prop_assert!(!fields.is_empty(), "{}", body);
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    drop(app);
}
