//! Identity and access: tokens from `spacet token` (development mode) and from a
//! fake OIDC issuer (wiremock serving discovery and JWKS), over gRPC and HTTP.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use spacet::proto::{
    space_t_service_client::SpaceTServiceClient, BookingRequest, Destination, ListTicketsRequest,
    Ticket, TicketId, TriggerSyncRequest,
};
use tonic::{transport::Channel, Code};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

use crate::helpers::{
    assert_body_reason, assert_reason, body_reason, booking_request, pads, poll, send_json,
    StatusDetails, TestApp,
};

/// A development key file of this test's own.
fn dev_key_file() -> PathBuf {
    tempfile::Builder::new()
        .prefix("spacet-auth-test-")
        .tempdir()
        .unwrap()
        .keep()
        .join("auth-dev.key")
}

/// A token printed by `spacet token` with the key in `key_file`.
pub(crate) fn cli_token(key_file: &Path, roles: &str, subject: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_spacet"))
        .args([
            "token",
            "--role",
            roles,
            "--subject",
            subject,
            "--ttl",
            "10m",
        ])
        .env("AUTH_MODE", "dev")
        .env("AUTH_DEV_KEY_FILE", key_file)
        .output()
        .expect("spacet token runs");
    assert!(
        output.status.success(),
        "spacet token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT on stdout: {token}");
    token
}

/// An app in development mode with its own key.
pub(crate) async fn dev_app(extra: &[(&str, &str)]) -> (TestApp, PathBuf) {
    let key = dev_key_file();
    let key_text = key.display().to_string();
    let mut settings = vec![
        ("AUTH_MODE", "dev"),
        ("AUTH_DEV_KEY_FILE", key_text.as_str()),
    ];
    settings.extend_from_slice(extra);
    let app = TestApp::spawn_with(&settings).await;
    (app, key)
}

/// A gRPC request carrying `token`.
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A booking of a distinct passenger name (the log check looks for none of them).
fn request_for(day: &str, first: &str) -> BookingRequest {
    BookingRequest {
        first_name: first.into(),
        last_name: "Quillfeather".into(),
        ..booking_request(pads::KSC_39A, day, Destination::Moon)
    }
}

/// The HTTP booking body of `first` Quillfeather, born on `birthday`, to the Moon
/// from KSC 39A on 2049-01-05.
fn booking_json(first: &str, birthday: &str) -> Value {
    json!({"firstName": first, "lastName": "Quillfeather", "gender": "FEMALE",
        "birthday": format!("{birthday}T00:00:00Z"), "launchpadId": pads::KSC_39A,
        "launchDate": "2049-01-05T00:00:00Z", "destinationId": "MOON"})
}

/// The first message (a launch) of a new rocket.
fn launch_message() -> Value {
    json!({"metadata": {"channel": uuid::Uuid::new_v4(), "messageNumber": 1,
        "messageTime": "2049-01-01T00:00:00Z", "messageType": "RocketLaunched"},
        "message": {"type": "Falcon-9", "launchSpeed": 500, "mission": "ARTEMIS"}})
}

async fn grpc(app: &TestApp) -> SpaceTServiceClient<Channel> {
    app.grpc().await
}

#[tokio::test]
async fn anonymous_callers_are_refused_on_every_api_route_and_the_probes_stay_open() {
    let (app, _) = dev_app(&[]).await;
    let id = uuid::Uuid::now_v7().to_string();
    let booking = booking_json("Anon", "1991-02-03");
    let message = launch_message();
    for (verb, route, body) in [
        ("GET", "/v1/bookings?limit=100".to_string(), None),
        ("GET", format!("/v1/bookings/{id}"), None),
        ("POST", "/v1/bookings".to_string(), Some(booking)),
        (
            "PATCH",
            format!("/v1/bookings/{id}/cancel"),
            Some(json!({})),
        ),
        ("POST", "/v1/admin/sync".to_string(), Some(json!({}))),
        ("GET", "/v1/launchpads".to_string(), None),
        ("POST", "/messages".to_string(), Some(message)),
        ("GET", "/rockets".to_string(), None),
        ("GET", "/v1/rockets".to_string(), None),
    ] {
        let mut request = app.client.request(verb.parse().unwrap(), app.url(&route));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{verb} {route}");
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer realm="spacet""#,
            "{verb} {route}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], 16, "{verb} {route}: {body}");
        assert_eq!(body_reason(&body).as_deref(), Some("TOKEN_MISSING"));
    }
    assert_eq!(app.count("SELECT count(*) FROM tickets").await, 0);

    let mut client = grpc(&app).await;
    let refused = [
        client
            .list_bookings(ListTicketsRequest::default())
            .await
            .unwrap_err(),
        client
            .get_booking(TicketId { id: id.clone() })
            .await
            .unwrap_err(),
        client
            .launch_booking(request_for("2049-01-05", "Anon"))
            .await
            .unwrap_err(),
        client.cancel_booking(TicketId { id }).await.unwrap_err(),
        client
            .trigger_sync(TriggerSyncRequest::default())
            .await
            .unwrap_err(),
    ];
    for status in refused {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(status.reason().as_deref(), Some("TOKEN_MISSING"));
    }

    // The kubelet and the scrapers need no token.
    for probe in ["/healthz", "/readiness", "/liveness", "/metrics"] {
        let response = app.client.get(app.url(probe)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe}");
    }
}

#[tokio::test]
async fn passengers_see_and_cancel_only_their_own_tickets_and_agents_see_and_cancel_all() {
    let (app, key) = dev_app(&[]).await;
    let alice = cli_token(&key, "passenger", "alice");
    let bob = cli_token(&key, "passenger", "bob");
    let agent = cli_token(&key, "agent", "carol");
    let mut client = grpc(&app).await;

    // Alice books over HTTP, Bob over gRPC.
    let (status, alice_ticket) = send_json(
        app.client
            .post(app.url("/v1/bookings"))
            .bearer_auth(&alice)
            .json(&booking_json("Amaranth", "1991-02-03")),
    )
    .await;
    assert_eq!(status, 200, "{alice_ticket}");
    assert_eq!(alice_ticket["owner"], "alice");
    let alice_id = alice_ticket["id"].as_str().unwrap().to_string();
    let bob_ticket: Ticket = client
        .launch_booking(with_token(request_for("2049-01-05", "Bartholomew"), &bob))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob_ticket.owner, "bob");

    // Alice lists only hers, over both protocols.
    let (status, page) = send_json(
        app.client
            .get(app.url("/v1/bookings?limit=100"))
            .bearer_auth(&alice),
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [alice_id.as_str()]);
    // Even when she asks for Bob's.
    let listed = client
        .list_bookings(with_token(
            ListTicketsRequest {
                owner: Some("bob".into()),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tickets.iter().all(|t| t.owner == "alice"));

    // Bob's ticket does not exist for Alice: not found, not forbidden.
    let (status, body) = send_json(
        app.client
            .get(app.url(&format!("/v1/bookings/{}", bob_ticket.id)))
            .bearer_auth(&alice),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_body_reason(&body, "TICKET_NOT_FOUND");
    let status = client
        .cancel_booking(with_token(
            TicketId {
                id: bob_ticket.id.clone(),
            },
            &alice,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_reason(&status, "TICKET_NOT_FOUND");
    let (status, body) = send_json(
        app.client
            .patch(app.url(&format!("/v1/bookings/{}/cancel", bob_ticket.id)))
            .bearer_auth(&alice)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 404);
    assert_body_reason(&body, "TICKET_NOT_FOUND");
    assert_eq!(
        app.count("SELECT count(*) FROM tickets WHERE status = 'CONFIRMED'")
            .await,
        2,
        "Alice cancelled nothing"
    );

    // A passenger cannot book for someone else, nor trigger a sync.
    let status = client
        .launch_booking(with_token(
            BookingRequest {
                owner: "bob".into(),
                ..request_for("2049-01-05", "Amaranth")
            },
            &alice,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.reason().as_deref(), Some("ROLE_REQUIRED"));
    let (status, body) = send_json(
        app.client
            .post(app.url("/v1/admin/sync"))
            .bearer_auth(&alice)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body_reason(&body).as_deref(), Some("ROLE_REQUIRED"));

    // The agent sees both, with birthdays, and cancels both.
    let listed = client
        .list_bookings(with_token(ListTicketsRequest::default(), &agent))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tickets.len(), 2);
    let got = client
        .get_booking(with_token(
            TicketId {
                id: bob_ticket.id.clone(),
            },
            &agent,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(got.birthday.is_some());
    let (status, only_bob) = send_json(
        app.client
            .get(app.url("/v1/bookings?owner=bob"))
            .bearer_auth(&agent),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(only_bob["tickets"].as_array().unwrap().len(), 1);
    client
        .cancel_booking(with_token(
            TicketId {
                id: bob_ticket.id.clone(),
            },
            &agent,
        ))
        .await
        .unwrap();
    let (status, _) = send_json(
        app.client
            .patch(app.url(&format!("/v1/bookings/{alice_id}/cancel")))
            .bearer_auth(&agent)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.count("SELECT count(*) FROM tickets WHERE status = 'CANCELLED'")
            .await,
        2
    );

    // An agent books for a named passenger, who then sees the ticket.
    let for_dave = client
        .launch_booking(with_token(
            BookingRequest {
                owner: "dave".into(),
                ..request_for("2049-01-05", "Dorothea")
            },
            &agent,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(for_dave.owner, "dave");
    let dave = cli_token(&key, "passenger", "dave");
    let got = client
        .get_booking(with_token(TicketId { id: for_dave.id }, &dave))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.first_name, "Dorothea");
}

#[tokio::test]
async fn idempotency_keys_are_scoped_to_the_caller() {
    let (app, key) = dev_app(&[]).await;
    let alice = cli_token(&key, "passenger", "alice");
    let bob = cli_token(&key, "passenger", "bob");
    let book = |token: &str, first: &str| {
        app.client
            .post(app.url("/v1/bookings"))
            .bearer_auth(token)
            .header("Idempotency-Key", "same-key-1")
            .json(&booking_json(first, "1980-04-05"))
    };
    let (status, first) = send_json(book(&alice, "Amaranth")).await;
    assert_eq!(status, 200, "{first}");
    // Bob's booking with the same key and another body is his own, not a conflict.
    let (status, bobs) = send_json(book(&bob, "Bartholomew")).await;
    assert_eq!(status, 200, "{bobs}");
    assert_ne!(bobs["id"], first["id"]);
    assert_eq!(bobs["owner"], "bob");
    // Alice's retry is a replay of hers.
    let (status, again) = send_json(book(&alice, "Amaranth")).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(app.count("SELECT count(*) FROM tickets").await, 2);
}

#[tokio::test]
async fn the_booking_rate_limit_answers_resource_exhausted_with_retry_after() {
    let (app, key) = dev_app(&[("BOOKING_RATE_LIMIT", "3")]).await;
    let alice = cli_token(&key, "passenger", "alice");
    let bob = cli_token(&key, "passenger", "bob");
    let mut client = grpc(&app).await;
    for _ in 0..3 {
        client
            .launch_booking(with_token(request_for("2049-01-05", "Amaranth"), &alice))
            .await
            .unwrap();
    }
    let status = client
        .launch_booking(with_token(request_for("2049-01-05", "Amaranth"), &alice))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.reason().as_deref(), Some("RATE_LIMITED"));
    use tonic_types::StatusExt;
    let delay = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_secs(20));

    let response = app
        .client
        .post(app.url("/v1/bookings"))
        .bearer_auth(&alice)
        .json(&booking_json("Amaranth", "1991-02-03"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 8);
    assert_eq!(body_reason(&body).as_deref(), Some("RATE_LIMITED"));

    // Another passenger is not affected; nothing was written for the refused ones.
    client
        .launch_booking(with_token(request_for("2049-01-05", "Bartholomew"), &bob))
        .await
        .unwrap();
    assert_eq!(app.count("SELECT count(*) FROM tickets").await, 4);
}

#[tokio::test]
async fn the_eleventh_active_ticket_of_a_passenger_is_refused_even_under_20_concurrent_bookings() {
    let (app, key) = dev_app(&[("BOOKING_RATE_LIMIT", "0")]).await;
    let alice = cli_token(&key, "passenger", "alice");
    let channel = app.channel().await;
    let attempts = (0..20).map(|_| {
        let mut client = SpaceTServiceClient::new(channel.clone());
        let request = with_token(request_for("2049-01-05", "Amaranth"), &alice);
        async move { client.launch_booking(request).await }
    });
    let results = futures::future::join_all(attempts).await;
    let booked = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(booked, 10, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert_eq!(refused.reason().as_deref(), Some("ACTIVE_TICKET_LIMIT"));
    }
    assert_eq!(
        app.count("SELECT count(*) FROM tickets WHERE owner = 'alice' AND status = 'CONFIRMED'")
            .await,
        10
    );
    // Cancelling one frees a place.
    let mut client = grpc(&app).await;
    let one = results
        .into_iter()
        .find_map(Result::ok)
        .unwrap()
        .into_inner();
    client
        .cancel_booking(with_token(TicketId { id: one.id }, &alice))
        .await
        .unwrap();
    client
        .launch_booking(with_token(request_for("2049-01-05", "Amaranth"), &alice))
        .await
        .unwrap();
}

#[tokio::test]
async fn rockets_take_messages_from_telemetry_and_are_read_with_any_token_or_publicly_if_allowed() {
    let (app, key) = dev_app(&[]).await;
    let telemetry = cli_token(&key, "telemetry", "rocket-relay");
    let passenger = cli_token(&key, "passenger", "alice");
    let message = launch_message();
    let post = |token: &str| {
        app.client
            .post(app.url("/messages"))
            .bearer_auth(token)
            .json(&message)
    };
    let (status, body) = send_json(post(&passenger)).await;
    assert_eq!(status, 403, "{body}");
    assert_body_reason(&body, "ROLE_REQUIRED");
    assert_eq!(body["details"][0]["metadata"]["roles"], "telemetry");
    let (status, body) = send_json(post(&telemetry)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        send_json(app.client.get(app.url("/rockets")).bearer_auth(&passenger)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rockets"].as_array().unwrap().len(), 1);

    let public = TestApp::spawn_with(&[
        ("AUTH_MODE", "dev"),
        ("ROCKETS_PUBLIC_READ", "true"),
        ("AUTH_DEV_KEY_FILE", key.to_str().unwrap()),
    ])
    .await;
    assert_eq!(public.get_json("/rockets").await.0, 200);
    let (status, body) = public.post_json("/messages", &message).await;
    assert_eq!(status, 401, "public read is not public write");
    assert_body_reason(&body, "TOKEN_MISSING");
}

#[tokio::test]
async fn liveness_details_are_for_admins_and_auth_mode_none_says_it_is_open() {
    let (app, key) = dev_app(&[]).await;
    let admin = cli_token(&key, "admin", "root");
    let (_, public) = app.get_json("/liveness").await;
    for (name, check) in public["checks"].as_object().unwrap() {
        assert_eq!(
            check.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["status"],
            "{name}: {check}"
        );
    }
    // The mode is said to everyone (issue 27): development keys are not for production.
    assert_eq!(public["auth_mode"], "dev", "{public}");
    assert!(public["warning"]
        .as_str()
        .unwrap()
        .contains("AUTH_MODE=dev"));
    let (_, detailed) = send_json(app.client.get(app.url("/liveness")).bearer_auth(&admin)).await;
    assert!(
        detailed["checks"]
            .as_object()
            .unwrap()
            .values()
            .any(|c| c.as_object().unwrap().len() > 1),
        "{detailed}"
    );

    // AUTH_MODE=none (the default of the rest of the suite): open, and said so.
    let open = TestApp::spawn().await;
    let (status, body) = open.get_json("/liveness").await;
    assert_eq!(status, 200);
    assert!(body["warning"].as_str().unwrap().contains("AUTH_MODE=none"));
    assert_eq!(body["auth_mode"], "none");
    assert_eq!(open.get_json("/v1/bookings").await.0, 200);
}

#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own_and_reflection_can_be_off() {
    let port = crate::helpers::free_port();
    let app = TestApp::spawn_with(&[
        ("METRICS_PORT", port.to_string().as_str()),
        ("GRPC_REFLECTION", "false"),
    ])
    .await;
    let (status, body) = app.get_json("/metrics").await;
    assert_eq!(status, 404);
    assert_body_reason(&body, "ROUTE_NOT_FOUND");
    let scraped = app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("spacet_"));

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let status = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    crate::helpers::assert_reason(&status, "RPC_UNIMPLEMENTED");
}

// ---------------------------------------------------------------------------
// A fake OIDC issuer.

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/auth")
            .join(name),
    )
    .unwrap()
}

/// The public JWKs of the test keys, by name.
fn jwk(name: &str) -> Value {
    static ALL: OnceLock<Value> = OnceLock::new();
    ALL.get_or_init(|| serde_json::from_slice(&fixture("jwks.json")).unwrap())[name].clone()
}

/// A token signed with the test key `key` (`rsa-…` RS256, `ec-…` ES256),
/// naming it as `kid`, with `claims` over sane defaults.
fn issuer_token(issuer: &str, key: &str, claims: Value) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut all = json!({"iss": issuer, "aud": "spacet-api", "sub": "oidc-user",
        "roles": ["agent"], "iat": now, "exp": now + 600});
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    let pem = fixture(&format!("{key}.pem"));
    let (alg, encoding) = if key.starts_with("ec") {
        (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap())
    } else {
        (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap())
    };
    let mut header = Header::new(alg);
    header.kid = Some(key.to_string());
    jsonwebtoken::encode(&header, &all, &encoding).unwrap()
}

/// Serves discovery and a JWKS with `keys`.
async fn publish_keys(server: &MockServer, keys: &[&str]) {
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": server.uri(),
            "jwks_uri": format!("{}/keys", server.uri()),
        })))
        .mount(server)
        .await;
    let keys: Vec<Value> = keys.iter().map(|k| jwk(k)).collect();
    Mock::given(method("GET"))
        .and(path("/keys"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "keys": keys })))
        .mount(server)
        .await;
}

async fn oidc_app(server: &MockServer) -> TestApp {
    TestApp::spawn_with(&[
        ("AUTH_MODE", "oidc"),
        ("AUTH_ISSUER", server.uri().as_str()),
        ("AUTH_AUDIENCE", "spacet-api"),
        ("AUTH_JWKS_MIN_REFRESH", "1s"),
    ])
    .await
}

/// The status of `GET /v1/bookings` with `token`, and the body.
async fn list_with(app: &TestApp, token: &str) -> (StatusCode, Value) {
    send_json(app.client.get(app.url("/v1/bookings")).bearer_auth(token)).await
}

#[tokio::test]
async fn issuer_tokens_are_verified_and_bad_ones_are_refused() {
    let server = MockServer::start().await;
    publish_keys(&server, &["rsa-1", "ec-1"]).await;
    let app = oidc_app(&server).await;
    let issuer = server.uri();

    for good in [
        issuer_token(&issuer, "rsa-1", json!({})),
        issuer_token(&issuer, "ec-1", json!({})),
        // Within the allowed clock skew.
        issuer_token(
            &issuer,
            "rsa-1",
            json!({"exp": jsonwebtoken::get_current_timestamp() - 5}),
        ),
    ] {
        let (status, body) = list_with(&app, &good).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut client = grpc(&app).await;
    client
        .list_bookings(with_token(
            ListTicketsRequest::default(),
            &issuer_token(&issuer, "ec-1", json!({})),
        ))
        .await
        .unwrap();

    let now = jsonwebtoken::get_current_timestamp();
    let good = issuer_token(&issuer, "rsa-1", json!({}));
    let tampered = {
        // Another subject in the payload, the original signature.
        let parts: Vec<&str> = good.split('.').collect();
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
        claims["roles"] = json!(["admin"]);
        format!(
            "{}.{}.{}",
            parts[0],
            engine.encode(claims.to_string()),
            parts[2]
        )
    };
    let unsigned = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = engine.encode(r#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
        let claims = engine.encode(
            json!({"iss": issuer, "aud": "spacet-api", "sub": "x", "roles": ["admin"], "exp": now + 600})
                .to_string(),
        );
        format!("{header}.{claims}.")
    };
    // HS256 keyed with the public key's text: the classic algorithm confusion.
    let confused = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &header,
            &json!({"iss": issuer, "aud": "spacet-api", "sub": "x", "exp": now + 600}),
            &EncodingKey::from_secret(jwk("rsa-1")["n"].as_str().unwrap().as_bytes()),
        )
        .unwrap()
    };
    for (what, token) in [
        (
            "expired",
            issuer_token(&issuer, "rsa-1", json!({"exp": now - 120})),
        ),
        (
            "another issuer",
            issuer_token(&issuer, "rsa-1", json!({"iss": "https://issuer.example"})),
        ),
        (
            "another audience",
            issuer_token(&issuer, "rsa-1", json!({"aud": "someone-else"})),
        ),
        (
            "another key",
            issuer_token(&issuer, "rsa-stranger", json!({})),
        ),
        (
            "no exp",
            issuer_token(&issuer, "rsa-1", json!({"exp": null})),
        ),
        ("alg none", unsigned),
        ("tampered", tampered),
        ("HS256 with the public key", confused),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let response = app
            .client
            .get(app.url("/v1/bookings"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{what}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{what}: {challenge}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body_reason(&body).as_deref(),
            Some("TOKEN_INVALID"),
            "{what}: {body}"
        );
        let status = client
            .list_bookings(with_token(ListTicketsRequest::default(), &token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
        assert_reason(&status, "TOKEN_INVALID");
    }
}

#[tokio::test]
async fn a_rotated_issuer_key_is_picked_up_without_a_restart_and_unknown_keys_cannot_flood_the_issuer(
) {
    let server = MockServer::start().await;
    publish_keys(&server, &["rsa-1"]).await;
    let app = oidc_app(&server).await;
    let issuer = server.uri();
    let old = issuer_token(&issuer, "rsa-1", json!({}));
    let new = issuer_token(&issuer, "rsa-2", json!({}));
    assert_eq!(list_with(&app, &old).await.0, 200);
    let (status, body) = list_with(&app, &new).await;
    assert_eq!(status, 401, "not published yet");
    assert_body_reason(&body, "TOKEN_INVALID");

    // The issuer rotates: rsa-2 replaces rsa-1.
    publish_keys(&server, &["rsa-2"]).await;
    let picked_up = poll(Duration::from_secs(10), || async {
        list_with(&app, &new).await.0 == 200
    })
    .await;
    assert!(picked_up, "the new key was not fetched");
    // The old key is gone from the issuer, so from us (after the next refresh).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stranger = issuer_token(&issuer, "rsa-stranger", json!({}));
    let (status, body) = list_with(&app, &stranger).await;
    assert_eq!(status, 401);
    assert_body_reason(&body, "TOKEN_INVALID");
    assert_eq!(
        list_with(&app, &old).await.0,
        401,
        "a retired key is dropped"
    );

    // Made-up key ids do not make us hammer the issuer: at most one fetch per
    // AUTH_JWKS_MIN_REFRESH (1 s).
    server.reset().await;
    publish_keys(&server, &["rsa-2"]).await;
    let started = std::time::Instant::now();
    for _ in 0..40 {
        assert_eq!(list_with(&app, &stranger).await.0, 401);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/keys")
        .count();
    assert!(
        fetches as f64 <= elapsed.ceil() + 1.0,
        "{fetches} key fetches in {elapsed:.1} s"
    );
}
