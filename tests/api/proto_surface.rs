//! The proto is the one source of the HTTP surface: every `google.api.http`
//! binding is routed as annotated, the gateway's hand-written registration
//! (`gateway::RPCS`) names exactly the annotated RPCs, and the OpenAPI document
//! is the generator's output with every message field under its JSON name. The
//! bindings are read here from the descriptors directly, not through the
//! service's own reader.

use std::collections::BTreeSet;

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::Value;

use crate::{
    auth::{cli_token, dev_app},
    helpers::send_json,
};

/// (method, template, RPC) for every binding of every annotated RPC.
fn annotated() -> Vec<(String, String, MethodDescriptor)> {
    let pool = DescriptorPool::decode(spacet::proto::FILE_DESCRIPTOR_SET).unwrap();
    let http = pool.get_extension_by_name("google.api.http").unwrap();
    let mut out = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                continue;
            }
            let rule = options.get_extension(&http).as_message().unwrap().clone();
            let mut rules = vec![rule.clone()];
            if let Some(more) = rule.get_field_by_name("additional_bindings") {
                rules.extend(
                    more.as_list()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_message().unwrap().clone()),
                );
            }
            for rule in rules {
                for verb in ["get", "put", "post", "delete", "patch"] {
                    if rule.has_field_by_name(verb) {
                        let template = rule.get_field_by_name(verb).unwrap();
                        out.push((
                            verb.to_string(),
                            template.as_str().unwrap().to_string(),
                            method.clone(),
                        ));
                    }
                }
            }
        }
    }
    assert!(out.len() >= 9, "the service's RPCs are annotated: {out:?}");
    out
}

/// A concrete URL path for a template: each variable a fresh UUID.
fn concrete(template: &str) -> String {
    let mut path = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').unwrap();
        path.push_str(&uuid::Uuid::now_v7().to_string());
        rest = &rest[close + 1..];
    }
    path.push_str(rest);
    path
}

fn reason(body: &Value) -> Option<&str> {
    body["details"]
        .as_array()?
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")?["reason"]
        .as_str()
}

#[tokio::test]
async fn every_annotated_rpc_is_routed_as_annotated_and_reaches_its_rpc() {
    let (app, key) = dev_app(&[]).await;
    let token = cli_token(&key, "agent,admin,telemetry", "surface-test");
    let bindings = annotated();
    let bound: BTreeSet<(String, String)> = bindings
        .iter()
        .map(|(verb, template, _)| (verb.clone(), template.clone()))
        .collect();
    for (verb, template, method) in &bindings {
        let url = app.url(&concrete(template));
        let http_method: reqwest::Method = verb.to_uppercase().parse().unwrap();
        // Without a token the RPC itself refuses: the route reached it.
        let (status, body) = send_json(
            app.client
                .request(http_method.clone(), &url)
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
        assert_eq!(
            status,
            401,
            "{verb} {template} ({}): {body}",
            method.full_name()
        );
        assert_eq!(
            reason(&body),
            Some("TOKEN_MISSING"),
            "{verb} {template}: {body}"
        );

        // Every other method on the same path is 405, unless bound too.
        for other in ["get", "put", "post", "delete", "patch"] {
            if other == verb || bound.contains(&(other.to_string(), template.clone())) {
                continue;
            }
            let response = app
                .client
                .request(other.to_uppercase().parse().unwrap(), &url)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{other} {template}");
        }

        // With a token, a binding without variables answers with its RPC's
        // response message: every field (the gateway writes default values), by
        // JSON name, and nothing else.
        if verb != "get" || template.contains('{') {
            continue;
        }
        let (status, body) = send_json(
            app.client
                .request(http_method, &url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
        assert_eq!(status, 200, "{verb} {template}: {body}");
        let keys: BTreeSet<String> = body.as_object().unwrap().keys().cloned().collect();
        let output = method.output();
        let always: BTreeSet<String> = output
            .fields()
            .filter(|f| {
                f.is_list() || !matches!(f.kind(), Kind::Message(_)) && !f.supports_presence()
            })
            .map(|f| f.json_name().to_string())
            .collect();
        let all: BTreeSet<String> = output.fields().map(|f| f.json_name().to_string()).collect();
        assert!(keys.is_subset(&all), "{template}: {keys:?} ⊄ {all:?}");
        assert!(always.is_subset(&keys), "{template}: {always:?} ⊄ {keys:?}");
    }
}

/// Every annotated RPC has its handler in the gateway's registration, and the
/// registration names no other: a handler nothing routes to would be dead code.
#[test]
fn the_gateway_registers_a_handler_for_exactly_the_annotated_rpcs() {
    let annotated: BTreeSet<String> = annotated()
        .iter()
        .map(|(_, _, method)| method.full_name().to_string())
        .collect();
    let registered: Vec<&str> = spacet::api::http::gateway::RPCS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    let unique: BTreeSet<String> = registered.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        unique.len(),
        registered.len(),
        "registered twice: {registered:?}"
    );
    assert_eq!(
        unique, annotated,
        "gateway::RPCS must name exactly the RPCs with a google.api.http rule"
    );
}

/// The committed document is the generator's; every message an operation
/// reaches (its response, its body) has a schema with every field under its JSON
/// name, every enum its values, and a request without a body has each field as
/// a path or query parameter.
#[test]
fn the_committed_openapi_document_is_the_generators_output_with_every_field() {
    let committed: Value = serde_json::from_str(include_str!("../../openapi/spacet.json")).unwrap();
    let generated = spacet::api::http::openapi::document();
    assert!(
        committed == generated,
        "openapi/spacet.json differs from the generator's output: run \
         `cargo run -- openapi > openapi/spacet.json` and review the diff"
    );
    let schemas = committed["components"]["schemas"].as_object().unwrap();
    let mut checked = 0;
    let mut reached: Vec<MessageDescriptor> = Vec::new();
    for (verb, template, method) in annotated() {
        let path = template.replace("=*}", "}").replace("=**}", "}");
        let operation = &committed["paths"][&path][&verb];
        assert_eq!(operation["operationId"], method.name(), "{verb} {path}");
        reached.push(method.output());
        if operation["requestBody"].is_object() {
            reached.push(method.input());
            continue;
        }
        // No body: every field of the request is a path or query parameter.
        let parameters: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        for field in method.input().fields() {
            assert!(
                parameters.contains(field.json_name()) || parameters.contains(field.name()),
                "{verb} {path}: {} is not a parameter",
                field.json_name()
            );
            checked += 1;
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(message) = reached.pop() {
        if message.full_name().starts_with("google.protobuf.")
            || !seen.insert(message.full_name().to_string())
        {
            continue;
        }
        let schema = &schemas[message.name()];
        assert!(schema.is_object(), "no schema for {}", message.full_name());
        for field in message.fields() {
            assert!(
                schema["properties"][field.json_name()].is_object(),
                "{}.{} is not in the schema as {}",
                message.name(),
                field.name(),
                field.json_name()
            );
            checked += 1;
            if let Kind::Message(inner) = field.kind() {
                reached.push(inner);
            }
            if let Kind::Enum(e) = field.kind() {
                let values: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
                let documented = &schemas.get(e.name()).expect("the enum has a schema")["enum"];
                assert_eq!(documented, &serde_json::json!(values), "enum {}", e.name());
            }
        }
    }
    assert!(checked > 80, "{checked} fields checked");
}
