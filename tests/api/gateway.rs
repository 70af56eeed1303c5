//! The HTTP/JSON gateway: grpc-gateway's JSON, status codes and error bodies.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{pads, TestApp};

fn go_example() -> Value {
    json!({"firstName":"Ada","lastName":"Lovelace","gender":"FEMALE","birthday":"1990-12-01T00:00:00Z",
           "launchpadId":"5e9e4502f509094188566f88","launchDate":"2049-12-01T00:00:00Z","destinationId":"MARS"})
}

async fn post_booking(app: &TestApp, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/v1/bookings"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
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
    let (status, ticket) = post_booking(&app, &go_example()).await;
    assert_eq!(status, 200, "{ticket}");
    assert_eq!(ticket["firstName"], "Ada");
    assert_eq!(ticket["destinationId"], "MARS");
    assert_eq!(ticket["gender"], "FEMALE");
    assert_eq!(ticket["status"], "CONFIRMED");
    assert_eq!(ticket["launchpadId"], pads::KSC_39A);
    let launch =
        chrono::DateTime::parse_from_rfc3339(ticket["launchDate"].as_str().unwrap()).unwrap();
    assert_eq!(launch.to_utc().to_rfc3339(), "2049-12-01T00:00:00+00:00");

    let id = ticket["id"].as_str().unwrap();
    let got: Value = app
        .client
        .get(app.url(&format!("/v1/bookings/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, ticket);
    let cancel = app
        .client
        .patch(app.url(&format!("/v1/bookings/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    assert_eq!(cancel.json::<Value>().await.unwrap(), json!({"id": id}));
    let got: Value = app
        .client
        .get(app.url(&format!("/v1/bookings/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "CANCELLED");
    assert_eq!(got["cancellationReason"], "USER_REQUESTED");
}

#[tokio::test]
async fn snake_case_names_and_enum_numbers_are_accepted() {
    let app = TestApp::spawn().await;
    let body = json!({"first_name":"Zoë","last_name":"O'Neil","gender":2,"birthday":"1990-12-01T00:00:00Z",
                      "launchpad_id": pads::KSC_39A,"launch_date":"2049-12-01T00:00:00Z","destination_id":1});
    let (status, ticket) = post_booking(&app, &body).await;
    assert_eq!(status, 200, "{ticket}");
    assert_eq!(
        (ticket["gender"].as_str(), ticket["destinationId"].as_str()),
        (Some("FEMALE"), Some("MARS"))
    );
}

#[tokio::test]
async fn domain_errors_get_grpc_gateway_statuses_and_details() {
    let app = TestApp::spawn_with(&[("SEATS_PER_FLIGHT", "1")]).await;
    // Validation: 400 with every field violation.
    let (status, body) = post_booking(&app, &json!({"firstName":"4","destinationId":"MARS"})).await;
    assert_eq!(status, 400);
    assert_error_body(&body, 3);
    assert_eq!(
        body["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    let fields: BTreeSet<&str> = body["details"][0]["fieldViolations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "first_name",
            "last_name",
            "birthday",
            "launchpad_id",
            "launch_date"
        ])
    );
    // Business rule: 400 FAILED_PRECONDITION with ErrorInfo.
    assert_eq!(post_booking(&app, &go_example()).await.0, 200);
    let (status, body) = post_booking(&app, &go_example()).await;
    assert_eq!(status, 400);
    assert_error_body(&body, 9);
    assert_eq!(
        body["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(body["details"][0]["reason"], "FLIGHT_FULL");
    assert_eq!(
        body["details"][0]["metadata"]["launchpad_id"],
        pads::KSC_39A
    );
    // Not found: 404.
    let missing = app
        .client
        .get(app.url(&format!("/v1/bookings/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_error_body(&missing.json().await.unwrap(), 5);
    // Malformed id: 400.
    let malformed = app
        .client
        .get(app.url("/v1/bookings/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
}

#[tokio::test]
async fn the_idempotency_key_header_makes_retries_safe() {
    let app = TestApp::spawn().await;
    let send = |body: Value| {
        app.client
            .post(app.url("/v1/bookings"))
            .header("Idempotency-Key", "order-77")
            .json(&body)
            .send()
    };
    let first: Value = send(go_example()).await.unwrap().json().await.unwrap();
    let second: Value = send(go_example()).await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    let mut other = go_example();
    other["firstName"] = json!("Grace");
    let conflict = send(other).await.unwrap();
    assert_eq!(conflict.status(), 409);
    assert_error_body(&conflict.json().await.unwrap(), 6);
}

#[tokio::test]
async fn transport_errors_get_json_bodies_and_the_right_status() {
    let app = TestApp::spawn_with(&[("HTTP_BODY_LIMIT", "2048")]).await;
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            app.client
                .post(app.url("/v1/bookings"))
                .header("content-type", "application/json")
                .body("{\"firstName\":"),
            400,
        ),
        (
            app.client
                .post(app.url("/v1/bookings"))
                .header("content-type", "application/json")
                .body("[1,2]"),
            400,
        ),
        (
            app.client
                .post(app.url("/v1/bookings"))
                .header("content-type", "text/plain")
                .body("{}"),
            415,
        ),
        (
            app.client
                .post(app.url("/v1/bookings"))
                .json(&json!({"firstName": "a".repeat(4096)})),
            413,
        ),
        (
            app.client
                .post(app.url("/v1/bookings"))
                .json(&json!({"favouriteColour": "red"})),
            400,
        ),
        (
            app.client
                .post(app.url("/v1/bookings"))
                .json(&json!({"gender": "ROBOT"})),
            400,
        ),
        (app.client.get(app.url("/v1/nothing-here")), 404),
        (app.client.delete(app.url("/v1/bookings")), 405),
        (app.client.put(app.url("/v1/launchpads")), 405),
        (app.client.get(app.url("/v1/bookings?colour=red")), 400),
        (app.client.get(app.url("/v1/bookings?limit=abc")), 400),
        (app.client.get(app.url("/v1/bookings?status=MAYBE")), 400),
        (app.client.get(app.url("/v1/bookings?cursor=%%%")), 400),
    ];
    for (request, expected) in cases {
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
    }
    let unknown: Value = app
        .client
        .post(app.url("/v1/bookings"))
        .json(&json!({"favouriteColour": "red"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        unknown["details"][0]["fieldViolations"][0]["field"], "favouriteColour",
        "{unknown}"
    );
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
        assert_eq!(post_booking(&app, &body).await.0, 200);
    }
    let page: Value = app
        .client
        .get(app.url(&format!(
            "/v1/bookings?status=CONFIRMED&launchpad_id={}&limit=2",
            pads::KSC_39A
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["tickets"].as_array().unwrap().len(), 2);
    let cursor = page["nextCursor"].as_str().unwrap();
    assert!(!cursor.is_empty());
    let rest: Value = app
        .client
        .get(app.url(&format!("/v1/bookings?limit=2&cursor={cursor}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(rest["nextCursor"], "");
    // camelCase parameter names, enum numbers and timestamps work as in grpc-gateway.
    let filtered: Value = app
        .client
        .get(app.url("/v1/bookings?destinationId=2&launchDateFrom=2049-12-01T00:00:00Z&launch_date_to=2049-12-31T00:00:00Z"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let pads_json: Value = app
        .client
        .get(app.url("/v1/launchpads"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pads_json["launchpads"].as_array().unwrap().len(), 6);
    let schedule = app
        .client
        .get(app.url(&format!(
            "/v1/launchpads/{}/schedule?from=2049-03-01&to=2049-03-07",
            pads::KSC_39A
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(schedule.status(), 200);
    let schedule: Value = schedule.json().await.unwrap();
    assert_eq!(schedule["days"].as_array().unwrap().len(), 7);
    assert_eq!(schedule["days"][0]["date"], "2049-03-01");
    assert_eq!(
        schedule["days"][0]["freeDestinations"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let bad = app
        .client
        .get(app.url(&format!(
            "/v1/launchpads/{}/schedule?from=yesterday",
            pads::KSC_39A
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
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
    let served: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
