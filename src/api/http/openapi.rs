//! The OpenAPI document: generated from the descriptors (every RPC's
//! `google.api.http` binding, its parameters, and the schema of every message and
//! enum it reaches, with the fields' comments), merged with a small hand-written
//! overlay (`openapi/overlay.json`) for what the proto does not say: security,
//! headers such as `Idempotency-Key`, the routes that are not RPCs, and
//! constraints the RPCs enforce.
//!
//! `spacet openapi` prints it; `openapi/spacet.json` is that output, committed so
//! that changes are reviewed in diffs, and a test fails when the two differ.
//!
//! The mapping is proto3 JSON's, as grpc-gateway serves it: lowerCamelCase JSON
//! names, enums by name, 64-bit integers as strings, `Timestamp` as `date-time`.
//! Response messages are closed (`additionalProperties: false`) and list as
//! required every field the gateway always writes (it writes default values;
//! message fields and `optional` ones only when set).

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{json, Map, Value};

use super::rules::{self, Binding, BodyRule};

/// The hand-written part.
const OVERLAY: &str = include_str!("../../../openapi/overlay.json");

/// The whole document: the generated part with the overlay merged over it.
pub fn document() -> Value {
    let overlay: Value = serde_json::from_str(OVERLAY).expect("openapi/overlay.json is JSON");
    let mut document = generated();
    merge(&mut document, overlay);
    document
}

/// The document as committed: pretty JSON with a final newline.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("JSON");
    text.push('\n');
    text
}

/// The part generated from the descriptors alone.
pub fn generated() -> Value {
    let mut schemas = Schemas::default();
    let mut paths = Map::new();
    for binding in rules::bindings() {
        schemas.response(&binding.method.output());
        let operation = operation(binding, &mut schemas);
        let item = paths
            .entry(binding.openapi_path())
            .or_insert_with(|| Value::Object(Map::new()));
        item[binding.verb] = operation;
    }
    json!({
        "paths": paths,
        "components": {"schemas": schemas.finish()},
    })
}

fn operation(binding: &Binding, schemas: &mut Schemas) -> Value {
    let method = &binding.method;
    let input = method.input();
    let mut parameters = Vec::new();
    for variable in &binding.variables {
        let mut parameter = json!({
            "name": variable.param,
            "in": "path",
            "required": true,
            "schema": schemas.field(&variable.field),
        });
        if let Some(text) = comment(&variable.field.parent_file(), variable.field.path()) {
            parameter["description"] = json!(text);
        }
        parameters.push(parameter);
    }
    let mut operation = Map::new();
    operation.insert("operationId".into(), json!(method.name()));
    if let Some(text) = comment(&method.parent_file(), method.path()) {
        operation.insert("description".into(), json!(text));
    }
    operation.insert("tags".into(), json!([method.parent_service().name()]));
    match &binding.body {
        BodyRule::Whole => {
            schemas.request(&input);
            operation.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "content": {"application/json": {"schema": reference(&input)}},
                }),
            );
        }
        BodyRule::Field(field) => {
            operation.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "content": {"application/json": {"schema": schemas.field(field)}},
                }),
            );
        }
        BodyRule::None => {}
    }
    if binding.body != BodyRule::Whole {
        let bound: BTreeSet<&str> = binding
            .variables
            .iter()
            .map(|v| v.field_path.as_str())
            .chain(match &binding.body {
                BodyRule::Field(field) => Some(field.name()),
                _ => None,
            })
            .collect();
        query_parameters(&input, "", "", &bound, schemas, &mut parameters);
    }
    if !parameters.is_empty() {
        operation.insert("parameters".into(), Value::Array(parameters));
    }
    operation.insert(
        "responses".into(),
        json!({
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": reference(&method.output())}},
            },
            "default": {"$ref": "#/components/responses/Error"},
        }),
    );
    Value::Object(operation)
}

/// grpc-gateway's query parameters: every field not bound by the path or the
/// body, nested message fields by dotted names (well-known types are values).
fn query_parameters(
    message: &MessageDescriptor,
    prefix: &str,
    json_prefix: &str,
    bound: &BTreeSet<&str>,
    schemas: &mut Schemas,
    parameters: &mut Vec<Value>,
) {
    for field in message.fields() {
        let proto_path = format!("{prefix}{}", field.name());
        if bound.contains(proto_path.as_str()) {
            continue;
        }
        match field.kind() {
            Kind::Message(inner)
                if !is_well_known(&inner) && !field.is_list() && !field.is_map() =>
            {
                query_parameters(
                    &inner,
                    &format!("{proto_path}."),
                    &format!("{json_prefix}{}.", field.json_name()),
                    bound,
                    schemas,
                    parameters,
                );
            }
            Kind::Message(inner) if !is_well_known(&inner) || field.is_map() => {}
            _ => {
                let json_path = format!("{json_prefix}{}", field.json_name());
                let mut parameter = json!({
                    "name": json_path,
                    "in": "query",
                    "required": false,
                    "schema": schemas.field(&field),
                });
                if let Some(text) = comment(&field.parent_file(), field.path()) {
                    parameter["description"] = json!(text);
                }
                if field.is_list() {
                    parameter["explode"] = json!(true);
                    parameter["style"] = json!("form");
                }
                parameters.push(parameter);
            }
        }
    }
}

/// The schemas reached so far: messages (as requests or responses) and enums.
#[derive(Default)]
struct Schemas {
    messages: BTreeMap<String, (MessageDescriptor, bool)>,
    enums: BTreeMap<String, EnumDescriptor>,
}

impl Schemas {
    fn request(&mut self, message: &MessageDescriptor) {
        self.reach(message, false);
    }

    fn response(&mut self, message: &MessageDescriptor) {
        self.reach(message, true);
    }

    /// Records `message` and what it reaches; a message reached by a response
    /// is a response schema (closed, with its required fields).
    fn reach(&mut self, message: &MessageDescriptor, response: bool) {
        if is_well_known(message) {
            return;
        }
        let name = schema_name(message);
        match self.messages.get_mut(&name) {
            Some((_, seen_as_response)) if *seen_as_response || !response => return,
            Some((_, seen_as_response)) => *seen_as_response = true,
            None => {
                self.messages.insert(name, (message.clone(), response));
            }
        }
        for field in message.fields() {
            match field.kind() {
                Kind::Message(inner) => {
                    let inner = if field.is_map() {
                        match inner.map_entry_value_field().kind() {
                            Kind::Message(value) => value,
                            Kind::Enum(e) => {
                                self.enums.insert(schema_name_enum(&e), e);
                                continue;
                            }
                            _ => continue,
                        }
                    } else {
                        inner
                    };
                    self.reach(&inner, response);
                }
                Kind::Enum(e) => {
                    self.enums.insert(schema_name_enum(&e), e);
                }
                _ => {}
            }
        }
    }

    /// The schema of a field's value (an array for a repeated field).
    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("a map field is a message of entries")
            };
            let value = entry.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": self.single(&value)});
        }
        let single = self.single(field);
        if field.is_list() {
            json!({"type": "array", "items": single})
        } else {
            single
        }
    }

    fn single(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "format": "byte"}),
            Kind::Enum(e) => {
                self.enums.insert(schema_name_enum(&e), e.clone());
                json!({"$ref": format!("#/components/schemas/{}", schema_name_enum(&e))})
            }
            Kind::Message(m) => match m.full_name() {
                "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
                "google.protobuf.Duration" => {
                    json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"})
                }
                _ => reference(&m),
            },
        }
    }

    fn finish(mut self) -> Map<String, Value> {
        let mut out = Map::new();
        let messages = std::mem::take(&mut self.messages);
        for (name, (message, response)) in &messages {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for field in message.fields() {
                let mut schema = self.field(&field);
                if let Some(text) = comment(&field.parent_file(), field.path()) {
                    schema["description"] = json!(text);
                }
                if field
                    .field_descriptor_proto()
                    .options
                    .as_ref()
                    .and_then(|o| o.deprecated)
                    == Some(true)
                {
                    schema["deprecated"] = json!(true);
                }
                properties.insert(field.json_name().to_string(), schema);
                let always_written = field.is_list()
                    || field.is_map()
                    || (!matches!(field.kind(), Kind::Message(_))
                        && field.containing_oneof().is_none()
                        && !field.supports_presence());
                if always_written {
                    required.push(json!(field.json_name()));
                }
            }
            let mut schema = json!({"type": "object", "properties": properties});
            if let Some(text) = comment(&message.parent_file(), message.path()) {
                schema["description"] = json!(text);
            }
            if *response {
                schema["required"] = Value::Array(required);
                schema["additionalProperties"] = json!(false);
            }
            out.insert(name.clone(), schema);
        }
        for (name, e) in &self.enums {
            let mut schema = json!({
                "type": "string",
                "enum": e.values().map(|v| v.name().to_string()).collect::<Vec<_>>(),
            });
            let mut lines: Vec<String> = comment(&e.parent_file(), e.path()).into_iter().collect();
            for value in e.values() {
                if let Some(text) = comment(&e.parent_file(), value.path()) {
                    lines.push(format!("- `{}`: {}", value.name(), text.replace('\n', " ")));
                }
            }
            if !lines.is_empty() {
                schema["description"] = json!(lines.join("\n"));
            }
            out.insert(name.clone(), schema);
        }
        out
    }
}

fn is_well_known(message: &MessageDescriptor) -> bool {
    message.full_name().starts_with("google.protobuf.")
}

/// Messages and enums are named by their name inside the package
/// (`Ticket`, `Ticket.Passenger` → `Ticket.Passenger`).
fn schema_name(message: &MessageDescriptor) -> String {
    in_package(message.full_name(), message.package_name())
}

fn schema_name_enum(e: &EnumDescriptor) -> String {
    in_package(e.full_name(), e.package_name())
}

fn in_package(full_name: &str, package: &str) -> String {
    full_name
        .strip_prefix(package)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(full_name)
        .to_string()
}

fn reference(message: &MessageDescriptor) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", schema_name(message))})
}

/// The leading comment of the element at `path` in its file, trimmed.
fn comment(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let text = lines.join("\n").trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Merges `overlay` into `base`: objects key by key, `required` as a union,
/// `parameters` by (`name`, `in`) (an overlay parameter with the name of a
/// generated one is merged into it), a `description` appended as a paragraph of
/// its own (the proto comment first), any other value replaced.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match (key.as_str(), base.get_mut(&key)) {
                    ("required", Some(Value::Array(existing))) => {
                        if let Value::Array(more) = value {
                            for item in more {
                                if !existing.contains(&item) {
                                    existing.push(item);
                                }
                            }
                        }
                    }
                    ("parameters", Some(Value::Array(existing))) => {
                        if let Value::Array(more) = value {
                            for item in more {
                                let same = existing.iter_mut().find(|p| {
                                    p.get("name") == item.get("name")
                                        && p.get("in") == item.get("in")
                                });
                                match same {
                                    Some(parameter) => merge(parameter, item),
                                    None => existing.push(item),
                                }
                            }
                        }
                    }
                    ("description", Some(Value::String(existing))) => {
                        if let Value::String(more) = value {
                            existing.push_str("\n\n");
                            existing.push_str(&more);
                        }
                    }
                    (_, Some(existing)) => merge(existing, value),
                    (_, None) => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_merges_objects_unions_required_and_matches_parameters() {
        let mut base = json!({
            "a": {"b": 1, "required": ["x"], "description": "From the proto."},
            "parameters": [{"name": "id", "in": "path", "schema": {"type": "string"}}],
        });
        merge(
            &mut base,
            json!({
                "a": {"c": 2, "required": ["y", "x"], "description": "Role: agent."},
                "parameters": [
                    {"name": "id", "in": "path", "schema": {"format": "uuid"}},
                    {"name": "Idempotency-Key", "in": "header"},
                ],
            }),
        );
        assert_eq!(
            base,
            json!({
                "a": {
                    "b": 1,
                    "c": 2,
                    "required": ["x", "y"],
                    "description": "From the proto.\n\nRole: agent.",
                },
                "parameters": [
                    {"name": "id", "in": "path", "schema": {"type": "string", "format": "uuid"}},
                    {"name": "Idempotency-Key", "in": "header"},
                ],
            })
        );
    }
}
