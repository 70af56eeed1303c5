//! The `google.api.http` rules of every RPC, read from the embedded descriptor
//! set: the one source of the gateway's routes and of the OpenAPI document's
//! proto-derived paths. Editing an annotation changes both.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, FieldDescriptor, MessageDescriptor, MethodDescriptor};

use crate::proto::{self, google_api::http_rule::Pattern, google_api::HttpRule};

/// Every proto of the service, with source info (comments) and imports.
pub static DESCRIPTORS: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).expect("embedded descriptors decode")
});

/// A message of the embedded descriptor set, by full name.
pub fn message(full_name: &str) -> MessageDescriptor {
    DESCRIPTORS
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is in the descriptor set"))
}

/// Where an HTTP request's body goes in the request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    /// No body (`body` unset): every field not in the path is a query parameter.
    None,
    /// `body: "*"`: the body is the message; no query parameters.
    Whole,
    /// `body: "field"`: the body is that field; the others are query parameters.
    Field(FieldDescriptor),
}

/// One path variable: `{ticket.id}` names a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathVariable {
    /// The axum parameter name (the field path with `.` as `__`).
    pub param: String,
    /// The field path, as in the template (`ticket.id`).
    pub field_path: String,
    /// The leaf field.
    pub field: FieldDescriptor,
}

/// One HTTP binding of an RPC (its rule or one of its `additional_bindings`).
#[derive(Debug, Clone)]
pub struct Binding {
    /// The RPC.
    pub method: MethodDescriptor,
    /// Lower-case HTTP method (`get`, `post`, …), as axum and OpenAPI name them.
    pub verb: &'static str,
    /// The template as annotated (`/v1/bookings/{id}`).
    pub template: String,
    /// The route for axum (`{x=*}` → `{x}`, `{x=**}` → `{*x}`).
    pub route: String,
    /// The path variables, in template order.
    pub variables: Vec<PathVariable>,
    /// Where the body goes.
    pub body: BodyRule,
}

impl Binding {
    /// The RPC's full name (`spacet.v1.SpaceTService.LaunchBooking`).
    pub fn rpc(&self) -> &str {
        self.method.full_name()
    }

    /// The template as OpenAPI writes a path (`{x=*}` → `{x}`).
    pub(crate) fn openapi_path(&self) -> String {
        let mut path = self.route.clone();
        for variable in &self.variables {
            path = path.replace(
                &format!("{{*{}}}", variable.param),
                &format!("{{{}}}", variable.param),
            );
        }
        path
    }
}

/// Every binding of every RPC of the embedded descriptor set, in declaration
/// order. Panics on a template or body the gateway cannot serve: that is a
/// mistake in the proto, caught by the first test that builds the router.
pub fn bindings() -> &'static [Binding] {
    static BINDINGS: LazyLock<Vec<Binding>> = LazyLock::new(|| {
        let extension = DESCRIPTORS
            .get_extension_by_name("google.api.http")
            .expect("google/api/annotations.proto is in the descriptor set");
        let mut bindings = Vec::new();
        for service in DESCRIPTORS.services() {
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&extension) {
                    continue;
                }
                let rule: HttpRule = options
                    .get_extension(&extension)
                    .as_message()
                    .and_then(|m| m.transcode_to().ok())
                    .unwrap_or_else(|| {
                        panic!("{}: unreadable google.api.http", method.full_name())
                    });
                for rule in std::iter::once(&rule).chain(rule.additional_bindings.iter()) {
                    bindings.push(binding(&method, rule).unwrap_or_else(|e| {
                        panic!("{}: google.api.http: {e}", method.full_name())
                    }));
                }
            }
        }
        bindings
    });
    &BINDINGS
}

fn binding(method: &MethodDescriptor, rule: &HttpRule) -> Result<Binding, String> {
    let (verb, template) = match rule.pattern.as_ref() {
        Some(Pattern::Get(t)) => ("get", t),
        Some(Pattern::Post(t)) => ("post", t),
        Some(Pattern::Put(t)) => ("put", t),
        Some(Pattern::Delete(t)) => ("delete", t),
        Some(Pattern::Patch(t)) => ("patch", t),
        Some(Pattern::Custom(_)) => return Err("custom verbs are not served".into()),
        None => return Err("no pattern".into()),
    };
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err("streaming RPCs are not served by the gateway".into());
    }
    if !rule.response_body.is_empty() {
        return Err("response_body is not supported".into());
    }
    let input = method.input();
    let (route, variables) = parse_template(&input, template)?;
    let body = match rule.body.as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        name => BodyRule::Field(
            input
                .get_field_by_name(name)
                .ok_or_else(|| format!("body field {name} is not in {}", input.full_name()))?,
        ),
    };
    Ok(Binding {
        method: method.clone(),
        verb,
        template: template.clone(),
        route,
        variables,
        body,
    })
}

/// `/v1/{a}/b/{c.d=*}:verb` → the axum route and its variables. Variables are
/// single segments (`{x}`, `{x=*}`) or, last, the rest of the path (`{x=**}`).
fn parse_template(
    input: &MessageDescriptor,
    template: &str,
) -> Result<(String, Vec<PathVariable>), String> {
    if !template.starts_with('/') {
        return Err(format!("template {template} does not start with /"));
    }
    let mut route = String::new();
    let mut variables = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        route.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|i| open + i)
            .ok_or_else(|| format!("unclosed {{ in {template}"))?;
        let inner = &rest[open + 1..close];
        let (field_path, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
        let field = field_at(input, field_path)
            .ok_or_else(|| format!("{field_path} is not a field of {}", input.full_name()))?;
        if field.is_list() || field.is_map() {
            return Err(format!("{field_path} is repeated"));
        }
        let param = field_path.replace('.', "__");
        match pattern {
            "*" => route.push_str(&format!("{{{param}}}")),
            "**" if close + 1 == rest.len() => route.push_str(&format!("{{*{param}}}")),
            _ => {
                return Err(format!(
                    "pattern {inner} is not served (only * and a final **)"
                ))
            }
        }
        variables.push(PathVariable {
            param,
            field_path: field_path.to_string(),
            field,
        });
        rest = &rest[close + 1..];
    }
    route.push_str(rest);
    Ok((route, variables))
}

/// The field at a dotted path of field names.
fn field_at(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let (head, tail) = match path.split_once('.') {
        Some((head, tail)) => (head, Some(tail)),
        None => (path, None),
    };
    let field = message.get_field_by_name(head)?;
    match tail {
        None => Some(field),
        Some(tail) => match field.kind() {
            prost_reflect::Kind::Message(inner) => field_at(&inner, tail),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_become_routes() {
        let input = message("spacet.v1.TicketID");
        let (route, vars) = parse_template(&input, "/v1/bookings/{id}/cancel").unwrap();
        assert_eq!(route, "/v1/bookings/{id}/cancel");
        assert_eq!(vars.len(), 1);
        assert_eq!(vars[0].field.name(), "id");
        let (route, _) = parse_template(&input, "/v1/things/{id=**}").unwrap();
        assert_eq!(route, "/v1/things/{*id}");
        let (route, _) = parse_template(&input, "/v1/tickets/{id=*}:undo").unwrap();
        assert_eq!(route, "/v1/tickets/{id}:undo");
        for bad in [
            "/v1/{nope}",
            "v1/{id}",
            "/v1/{id",
            "/v1/{id=things/*}",
            "/v1/{id=**}/more",
        ] {
            assert!(parse_template(&input, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_annotated_rpc_has_its_bindings() {
        let bindings = bindings();
        let launch = bindings
            .iter()
            .find(|b| b.rpc() == "spacet.v1.SpaceTService.LaunchBooking")
            .unwrap();
        assert_eq!(
            (launch.verb, launch.route.as_str()),
            ("post", "/v1/bookings")
        );
        assert_eq!(launch.body, BodyRule::Whole);
        assert!(bindings
            .iter()
            .all(|b| !b.method.is_server_streaming() && !b.method.is_client_streaming()));
    }
}
