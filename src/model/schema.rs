//! OpenAPI schemas of the model's values that derive cannot state.

use serde_json::Value;

/// A schema of the OpenAPI document, written as the JSON it is.
pub(crate) fn schema(v: Value) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    serde_json::from_value(v).expect("the schemas written in the code are valid")
}

/// A list of `[name, value]` pairs, `value` a string of `format` (JSON
/// Schema 2020-12 `prefixItems`: utoipa writes tuples the 3.0 way).
pub(crate) fn pairs_schema(format: Value) -> Value {
    let mut value = serde_json::json!({"type": "string"});
    if let (Some(v), Some(f)) = (value.as_object_mut(), format.as_object()) {
        v.extend(f.clone());
    }
    serde_json::json!({"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2,
        "prefixItems": [{"type": "string"}, value]}})
}

pub(crate) fn env_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(pairs_schema(serde_json::json!({})))
}

/// The schema of a [`Level`](jobvisor_worker::Level): its name.
pub(crate) fn level_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let names = jobvisor_worker::Level::ALL.map(|l| l.as_str());
    schema(serde_json::json!({"type": "string", "enum": names,
        "description": "A log level, least severe first"}))
}
