//! The dashboard's routes (`/dashboard`, `/dashboard/rockets/{channel}`,
//! `/dashboard/assets/{file}`): served from the binary on the HTTP port, with a
//! strict Content-Security-Policy, `nosniff`, ETags and revalidation. What the
//! page does in a browser is tested in tests/browser (headless Chromium).

use reqwest::{header, StatusCode};

use crate::helpers::{assert_body_reason, TestApp};

/// The script, style and icon files the page names (`/dashboard/assets/...`).
fn asset_paths(html: &str) -> Vec<String> {
    html.split("\"/dashboard/assets/")
        .skip(1)
        .map(|rest| format!("/dashboard/assets/{}", rest.split('"').next().unwrap()))
        .collect()
}

/// The modules a script imports (`import ... from './x.js';`).
fn imports(script: &str) -> Vec<String> {
    script
        .lines()
        .filter(|line| line.starts_with("import "))
        .filter_map(|line| line.rsplit("'./").next()?.split('\'').next())
        .map(|name| format!("/dashboard/assets/{name}"))
        .collect()
}

fn assert_secured(response: &reqwest::Response, what: &str) {
    let headers = response.headers();
    let policy = headers
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"))
        .to_str()
        .unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(
            policy.contains(directive),
            "{what}: {policy} lacks {directive}"
        );
    }
    assert!(!policy.contains("unsafe"), "{what}: {policy}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
}

#[tokio::test]
async fn the_page_and_every_file_it_loads_are_served_with_a_strict_policy_and_etags() {
    let app = TestApp::spawn().await;

    let response = app.client.get(app.url("/dashboard")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_secured(&response, "/dashboard");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="/dashboard/assets/app.js"></script>"#));
    // No inline script or style: the policy would block them.
    assert_eq!(page.matches("<script").count(), 1, "one script, by src");
    assert!(
        !page.contains("<style") && !page.contains(" style="),
        "inline style"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from elsewhere"
    );

    // A rocket's page is the same document (the scripts route on the client).
    let channel = uuid::Uuid::new_v4();
    let response = app
        .client
        .get(app.url(&format!("/dashboard/rockets/{channel}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_secured(&response, "/dashboard/rockets/{channel}");
    assert_eq!(response.text().await.unwrap(), page);

    // Every file the page names, and every module those scripts import.
    let mut pending = asset_paths(&page);
    let mut served = Vec::new();
    while let Some(path) = pending.pop() {
        if served.contains(&path) {
            continue;
        }
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_secured(&response, &path);
        let headers = response.headers().clone();
        let content_type = headers[header::CONTENT_TYPE].to_str().unwrap().to_owned();
        let expected = match path.rsplit('.').next().unwrap() {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("{path}: unexpected kind {other}"),
        };
        assert_eq!(content_type, expected, "{path}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        assert!(
            etag.starts_with("W/\"") && etag.ends_with('"'),
            "{path}: {etag}"
        );
        let body = response.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        if path.ends_with(".js") {
            // Rocket data reaches the DOM as text only (Trusted Types enforce it too).
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!body.contains(sink), "{path} uses {sink}");
            }
            pending.extend(imports(&body));
        }

        // Revalidation: the same ETag gets 304 and no body; another gets the file.
        let response = app
            .client
            .get(app.url(&path))
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(response.headers()[header::ETAG], etag.as_str(), "{path}");
        assert_secured(&response, &path);
        assert!(response.bytes().await.unwrap().is_empty(), "{path}");
        let response = app
            .client
            .get(app.url(&path))
            .header(header::IF_NONE_MATCH, "\"0000000000000000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        served.push(path);
    }
    assert!(
        served.len() >= 7,
        "the page, its style, icon and modules: {served:?}"
    );
    println!("dashboard: {} files served and revalidated", served.len());
}

#[tokio::test]
async fn unknown_files_are_404_and_the_trailing_slash_redirects() {
    let app = TestApp::spawn().await;
    for path in [
        "/dashboard/assets/nope.js",
        "/dashboard/assets/..%2Fsrc%2Fmain.rs",
        "/dashboard/assets/index.html",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_secured(&response, path);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], 5, "{path}: grpc-gateway's NOT_FOUND body");
        assert_body_reason(&body, "ROUTE_NOT_FOUND");
    }

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(app.url("/dashboard/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(response.headers()[header::LOCATION], "/dashboard");

    let response = app.client.post(app.url("/dashboard")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_body_reason(&response.json().await.unwrap(), "METHOD_NOT_ALLOWED");
    let response = app.client.head(app.url("/dashboard")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "HEAD is served like GET");
}
