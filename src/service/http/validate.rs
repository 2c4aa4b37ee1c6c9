//! Requests are checked against the OpenAPI document before a handler runs:
//! the path parameters, the query string and the JSON body of each
//! operation, each against the schema the document states for it (JSON
//! Schema 2020-12, formats included). So the document is the contract in
//! fact, not a description kept beside the code: what it forbids is a 400
//! naming the first thing wrong, and what it allows reaches the handler.
//!
//! A query string is text; each value is read as the type its schema
//! states (an integer, a boolean, or a comma-separated list, OpenAPI's
//! `style: form, explode: false`) before it is checked.

use super::error::ApiError;
use super::MAX_BODY;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestPartsExt;
use jsonschema::Validator;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The checks of every operation, by method and path template.
pub(super) struct Checks {
    ops: HashMap<(Method, String), Op>,
    /// The document, for the schemas references point to.
    doc: Value,
}

/// An operation's checks.
#[derive(Default)]
struct Op {
    path: Option<Validator>,
    query: Option<Query>,
    body: Option<BodyCheck>,
}

struct Query {
    validator: Validator,
    kinds: HashMap<String, Kind>,
}

struct BodyCheck {
    validator: Validator,
    schema: Value,
    required: bool,
}

/// How a query value is read before it is checked.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Text,
    Integer,
    Number,
    Boolean,
    List(Box<Kind>),
}

impl Checks {
    pub(super) fn new(doc: &Value) -> Checks {
        let mut ops = HashMap::new();
        let compile = |schema: Value| {
            // Only the components the schema reaches: each validator keeps
            // its root, and the whole section in each of them cost the
            // service about 17 MB.
            let components = reachable_components(&schema, doc);
            let mut root = schema;
            root["components"] = components;
            jsonschema::options()
                .should_validate_formats(true)
                .build(&root)
                .expect("the document's schemas compile")
        };
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                let mut checks = Op::default();
                for place in ["path", "query"] {
                    let params: Vec<&Value> = op["parameters"]
                        .as_array()
                        .map(|ps| ps.iter().filter(|p| p["in"] == place).collect())
                        .unwrap_or_default();
                    if params.is_empty() {
                        continue;
                    }
                    let mut properties = Map::new();
                    let mut required = Vec::new();
                    let mut kinds = HashMap::new();
                    for p in params {
                        let name = p["name"].as_str().unwrap_or_default().to_string();
                        kinds.insert(name.clone(), kind(&p["schema"], doc));
                        properties.insert(name.clone(), p["schema"].clone());
                        if p["required"] == true {
                            required.push(Value::String(name));
                        }
                    }
                    let validator = compile(json!({"type": "object", "properties": properties,
                        "required": required, "additionalProperties": false}));
                    if place == "path" {
                        checks.path = Some(validator);
                    } else {
                        checks.query = Some(Query { validator, kinds });
                    }
                }
                let body = &op["requestBody"];
                if let Some(schema) = body["content"]["application/json"].get("schema") {
                    checks.body = Some(BodyCheck {
                        validator: compile(schema.clone()),
                        schema: schema.clone(),
                        required: body["required"] == true,
                    });
                }
                ops.insert((method, path.clone()), checks);
            }
        }
        Checks {
            ops,
            doc: doc.clone(),
        }
    }

    /// Checks `data` against every body schema (for fuzzing: no panic).
    pub(super) fn fuzz(&self, data: &Bytes) {
        if let Ok(v) = serde_json::from_slice::<Value>(data) {
            for op in self.ops.values() {
                if let Some(b) = &op.body {
                    let _ = first_error("body", &b.validator, &v);
                }
            }
        }
        if let Ok(text) = std::str::from_utf8(data) {
            for op in self.ops.values() {
                if let Some(q) = &op.query {
                    let _ = query_object(text, &q.kinds);
                }
            }
        }
    }
}

/// The kind of value `schema` states, following references.
/// The `components` of `doc` that `schema` refers to, directly or through
/// other components, in the document's shape.
fn reachable_components(schema: &Value, doc: &Value) -> Value {
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found: Vec<&str> = Vec::new();
    refs(schema, &mut found);
    let mut components = json!({});
    while let Some(target) = found.pop() {
        let Some(pointer) = target.strip_prefix("#/components/") else {
            continue;
        };
        let Some((section, name)) = pointer.split_once('/') else {
            continue;
        };
        if components.get(section).and_then(|s| s.get(name)).is_some() {
            continue;
        }
        if let Some(part) = doc.pointer(&format!("/components/{pointer}")) {
            components[section][name] = part.clone();
            refs(part, &mut found);
        }
    }
    components
}

fn kind(schema: &Value, doc: &Value) -> Kind {
    if let Some(target) = schema["$ref"].as_str() {
        let pointer = target.trim_start_matches('#');
        return doc.pointer(pointer).map_or(Kind::Text, |s| kind(s, doc));
    }
    for any in ["oneOf", "anyOf"] {
        if let Some(variants) = schema[any].as_array() {
            let variant = variants.iter().find(|v| v["type"] != "null");
            return variant.map_or(Kind::Text, |v| kind(v, doc));
        }
    }
    let ty = match &schema["type"] {
        Value::Array(types) => types.iter().find(|t| *t != "null").cloned(),
        t => Some(t.clone()),
    };
    match ty.as_ref().and_then(Value::as_str) {
        Some("integer") => Kind::Integer,
        Some("number") => Kind::Number,
        Some("boolean") => Kind::Boolean,
        Some("array") => Kind::List(Box::new(kind(&schema["items"], doc))),
        _ => Kind::Text,
    }
}

fn read(kind: &Kind, text: &str) -> Value {
    match kind {
        Kind::Integer => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(text.into())),
        Kind::Number => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(text.into()), Value::Number),
        Kind::Boolean => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text.into()),
        },
        Kind::List(_) if text.is_empty() => Value::Array(Vec::new()),
        Kind::List(item) => Value::Array(text.split(',').map(|t| read(item, t)).collect()),
        Kind::Text => Value::String(text.into()),
    }
}

/// The query string as the object its schema checks.
fn query_object(query: &str, kinds: &HashMap<String, Kind>) -> Result<Value, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
    let mut object = Map::new();
    for (name, text) in pairs {
        let value = read(kinds.get(&name).unwrap_or(&Kind::Text), &text);
        if object.insert(name.clone(), value).is_some() {
            return Err(ApiError::invalid(format!(
                "query parameter {name:?} is given more than once"
            )));
        }
    }
    Ok(Value::Object(object))
}

fn first_error(place: &str, validator: &Validator, value: &Value) -> Result<(), ApiError> {
    let Err(e) = validator.validate(value) else {
        return Ok(());
    };
    let at = e.instance_path().to_string();
    let mut text = e.to_string();
    // A zone that is not one of the ~600 names, or a cron expression that
    // does not fit the grammar's long pattern: said as the parser says it.
    match (at.rsplit('/').next(), value.pointer(&at)) {
        (Some("tz"), Some(Value::String(tz))) if tz.parse::<chrono_tz::Tz>().is_err() => {
            text = format!("unknown time zone {tz:?} (an IANA name such as Europe/Berlin)");
        }
        (Some("cron"), Some(Value::String(expr))) => {
            if let Err(e) = crate::schedule::CronSchedule::parse(expr, "UTC") {
                text = e.to_string();
            }
        }
        // A webhook's URL: said as the webhook's own check says it.
        (Some("url"), Some(Value::String(url))) => {
            let probe = crate::model::WebhookSpec::new("probe", url, &["failed"]);
            if let Err(e) = probe.check() {
                text = e;
            } else {
                text = format!(
                    "the URL {url:?} must be http:// or https:// with a plain host name or address"
                );
            }
        }
        _ => {}
    }
    if text.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    let at = if at.is_empty() {
        place.to_string()
    } else {
        format!("{place} {at}")
    };
    Err(ApiError::invalid(format!("{at}: {text}")))
}

pub(super) async fn check(State(checks): State<Arc<Checks>>, req: Request, next: Next) -> Response {
    match checked(&checks, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn checked(checks: &Checks, req: Request) -> Result<Request, ApiError> {
    let Some(template) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return Ok(req);
    };
    let method = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    let Some(op) = checks.ops.get(&(method, template)) else {
        return Ok(req);
    };
    super::guard::json_action(req.method(), req.headers())?;
    let (mut parts, body) = req.into_parts();
    if let Some(v) = &op.path {
        let params = parts
            .extract::<RawPathParams>()
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        let object: Map<String, Value> = params
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        first_error("path", v, &Value::Object(object))?;
    }
    if let Some(q) = &op.query {
        let object = query_object(parts.uri.query().unwrap_or(""), &q.kinds)?;
        first_error("query", &q.validator, &object)?;
    } else if parts.uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::invalid("this route takes no query parameters"));
    }
    let Some(b) = &op.body else {
        return Ok(Request::from_parts(parts, body));
    };
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| super::error::body_error(&e, MAX_BODY))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if b.required {
            return Err(ApiError::invalid("a JSON body is required"));
        }
    } else {
        // Its type was checked with the route's (every body is an action's).
        let mut value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
        first_error("body", &b.validator, &value)?;
        if integers(&mut value, &b.schema, &checks.doc) {
            let bytes = serde_json::to_vec(&value).expect("JSON serializes");
            return Ok(Request::from_parts(parts, Body::from(bytes)));
        }
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Writes each number that `schema` says is an integer as one: JSON Schema
/// counts `3.0` as the integer 3, and so must the API. Returns whether it
/// changed anything. (Values of no stated type, such as a payload, stay
/// as they are.)
fn integers(value: &mut Value, schema: &Value, doc: &Value) -> bool {
    if let Some(target) = schema["$ref"].as_str() {
        return match doc.pointer(target.trim_start_matches('#')) {
            Some(s) => integers(value, s, doc),
            None => false,
        };
    }
    let mut changed = false;
    for any in ["oneOf", "anyOf", "allOf"] {
        for s in schema[any].as_array().into_iter().flatten() {
            changed |= integers(value, s, doc);
        }
    }
    let says_integer = match &schema["type"] {
        Value::String(t) => t == "integer",
        Value::Array(ts) => ts.iter().any(|t| t == "integer"),
        _ => false,
    };
    match value {
        Value::Number(n) if says_integer && n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let whole = if f.fract() != 0.0 {
                None
            } else if (i64::MIN as f64..i64::MAX as f64).contains(&f) {
                Some(Value::from(f as i64))
            } else if (0.0..u64::MAX as f64).contains(&f) {
                Some(Value::from(f as u64))
            } else {
                None
            };
            if let Some(w) = whole {
                *value = w;
                changed = true;
            }
        }
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if let Some(s) = schema["properties"].get(k) {
                    changed |= integers(v, s, doc);
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                let s = schema["prefixItems"].get(i).unwrap_or(&schema["items"]);
                changed |= integers(v, s, doc);
            }
        }
        _ => {}
    }
    changed
}

/// Gives every integer schema the bounds of its format (`int32`, `int64`,
/// and unsigned where its minimum is 0), so that the document states the
/// range the API's types really take.
pub(super) fn bound_integers(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let integer = match o.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            if integer {
                let unsigned = o
                    .get("minimum")
                    .and_then(Value::as_f64)
                    .is_some_and(|m| m >= 0.0);
                let (min, max): (Value, Value) = match o.get("format").and_then(Value::as_str) {
                    Some("int32") if unsigned => (0.into(), u32::MAX.into()),
                    Some("int32") => (i32::MIN.into(), i32::MAX.into()),
                    Some("int64") if unsigned => (0.into(), u64::MAX.into()),
                    _ => (i64::MIN.into(), i64::MAX.into()),
                };
                o.entry("minimum").or_insert(min);
                o.entry("maximum").or_insert(max);
            }
            for child in o.values_mut() {
                bound_integers(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_read_as_their_schemas_say() {
        let kinds = HashMap::from([
            ("limit".to_string(), Kind::Integer),
            ("status".to_string(), Kind::List(Box::new(Kind::Text))),
        ]);
        let q = query_object("limit=5&status=failed,succeeded&job=a%20b", &kinds).unwrap();
        assert_eq!(
            q,
            json!({"limit": 5, "status": ["failed", "succeeded"], "job": "a b"})
        );
        assert_eq!(query_object("limit=x", &kinds).unwrap()["limit"], "x");
        assert!(query_object("limit=1&limit=2", &kinds).is_err());
        assert_eq!(
            query_object("status=", &kinds).unwrap()["status"],
            json!([])
        );
    }

    #[test]
    fn whole_numbers_are_integers_where_the_schema_says_so() {
        let doc = json!({"components": {"schemas": {"N": {"type": "integer"}}}});
        let schema = json!({"properties": {
            "n": {"$ref": "#/components/schemas/N"},
            "m": {"oneOf": [{"type": "integer"}, {"type": "null"}]},
            "list": {"items": {"type": "integer"}},
            "payload": {}}});
        let mut v = json!({"n": 3.0, "m": 4.0, "list": [5.0, 6], "payload": 7.0});
        assert!(integers(&mut v, &schema, &doc));
        assert_eq!(v, json!({"n": 3, "m": 4, "list": [5, 6], "payload": 7.0}));
        assert!(v["payload"].is_f64());
        let mut v = json!({"n": 3.5});
        assert!(!integers(&mut v, &schema, &doc));
    }

    #[test]
    fn time_bounds_are_checked_as_the_document_states() {
        let doc = super::super::openapi_document(&super::super::Auth::none());
        let checks = Checks::new(&doc);
        let op = &checks.ops[&(Method::GET, "/v1/executions".to_string())];
        let q = op.query.as_ref().unwrap();
        let check = |query: &str| {
            let o = query_object(query, &q.kinds).unwrap();
            first_error("query", &q.validator, &o).is_ok()
        };
        assert!(check(
            "until=2026-12-01T00:00:00Z&since=1h&limit=5&status=failed,succeeded"
        ));
        assert!(check("until=now"));
        assert!(check("until=%2B5m"));
        assert!(!check("until=tomorrow"));
        assert!(!check("since=1x"));
        assert!(!check("limit=0"));
        assert!(!check("status=bogus"));
        assert!(!check("job="));
        assert!(!check("nope=1"));
    }

    #[test]
    fn integers_get_the_bounds_of_their_format() {
        let mut v = json!({"a": {"type": "integer", "format": "int32", "minimum": 0},
            "b": {"type": ["integer", "null"], "format": "int64"},
            "c": {"type": "integer", "format": "int32", "maximum": 7}});
        bound_integers(&mut v);
        assert_eq!(v["a"]["maximum"], u32::MAX);
        assert_eq!(v["b"]["minimum"], i64::MIN);
        assert_eq!(v["c"]["maximum"], 7);
        assert_eq!(v["c"]["minimum"], i32::MIN);
    }
}
