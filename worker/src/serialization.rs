//! DBOS `portable_json`: how inputs, outputs, errors and other payloads are stored.
//!
//! Invariants: everything mainstay writes is compact JSON with `serialization = 'portable_json'`;
//! a row in any other format is reported as [`Error::UnsupportedSerialization`], never guessed
//! at. Workflow inputs are `{"positionalArgs": [...], "namedArgs": {...}}`, and a Rust workflow's
//! arguments are its positional arguments in order.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Failure, Result};

/// The only serialization format mainstay reads and writes.
pub const PORTABLE_JSON: &str = "portable_json";

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Serialization {
        action: "serialize",
        what: what.to_string(),
        source,
    })
}

fn check_format(serialization: Option<&str>, what: &str) -> Result<()> {
    match serialization {
        None | Some(PORTABLE_JSON) => Ok(()),
        Some(other) => Err(Error::UnsupportedSerialization {
            what: what.to_string(),
            format: other.to_string(),
        }),
    }
}

fn parse(text: Option<&str>, serialization: Option<&str>, what: &str) -> Result<Value> {
    check_format(serialization, what)?;
    match text {
        None => Ok(Value::Null),
        Some(t) => serde_json::from_str(t).map_err(|source| {
            if serialization.is_none() {
                Error::UnsupportedSerialization {
                    what: what.to_string(),
                    format: "unknown (no serialization column, not JSON)".to_string(),
                }
            } else {
                Error::Serialization { action: "parse", what: what.to_string(), source }
            }
        }),
    }
}

/// Decodes a stored value (an output, a message, an event).
pub(crate) fn decode<T: DeserializeOwned>(
    text: Option<&str>,
    serialization: Option<&str>,
    what: &str,
) -> Result<T> {
    let value = parse(text, serialization, what)?;
    serde_json::from_value(value).map_err(|source| Error::Serialization {
        action: "deserialize",
        what: what.to_string(),
        source,
    })
}

/// Encodes workflow arguments (a tuple, or `()` for none) as portable inputs.
pub(crate) fn encode_args<A: Serialize>(args: &A, what: &str) -> Result<String> {
    let positional = match serde_json::to_value(args).map_err(|source| Error::Serialization {
        action: "serialize",
        what: what.to_string(),
        source,
    })? {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        single => vec![single],
    };
    let mut inputs = Map::new();
    inputs.insert("positionalArgs".into(), Value::Array(positional));
    inputs.insert("namedArgs".into(), Value::Object(Map::new()));
    encode(&Value::Object(inputs), what)
}

/// Decodes portable inputs into the workflow's argument tuple.
pub(crate) fn decode_args<A: DeserializeOwned>(
    text: Option<&str>,
    serialization: Option<&str>,
    what: &str,
) -> Result<A> {
    let value = parse(text, serialization, what)?;
    let (positional, named) = match value {
        Value::Null => (Vec::new(), Map::new()),
        Value::Object(mut obj) => {
            let positional = match obj.remove("positionalArgs") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items,
                Some(_) => return Err(malformed_inputs(what, "positionalArgs is not an array")),
            };
            let named = match obj.remove("namedArgs") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m,
                Some(_) => return Err(malformed_inputs(what, "namedArgs is not an object")),
            };
            (positional, named)
        }
        _ => return Err(malformed_inputs(what, "inputs are not a JSON object")),
    };
    if !named.is_empty() {
        let names: Vec<&String> = named.keys().collect();
        return Err(malformed_inputs(
            what,
            &format!(
                "named arguments {names:?} were given, but Rust workflows take positional \
                 arguments only; pass them in positionalArgs in declaration order"
            ),
        ));
    }
    let empty = positional.is_empty();
    match serde_json::from_value(Value::Array(positional)) {
        Ok(args) => Ok(args),
        Err(_) if empty => serde_json::from_value(Value::Null).map_err(|source| {
            Error::Serialization { action: "deserialize", what: what.to_string(), source }
        }),
        Err(source) => Err(Error::Serialization {
            action: "deserialize",
            what: what.to_string(),
            source,
        }),
    }
}

fn malformed_inputs(what: &str, why: &str) -> Error {
    Error::Failed(Failure::new("InvalidInputs", format!("{what}: {why}")))
}

/// Encodes a failure in DBOS's portable error format.
pub(crate) fn encode_failure(f: &Failure) -> String {
    // A Failure is plain data (strings and JSON values): serializing it cannot fail.
    serde_json::to_string(f).unwrap_or_else(|_| {
        format!("{{\"name\":\"Error\",\"message\":{:?},\"code\":null,\"data\":null}}", f.message)
    })
}

/// Decodes a recorded error. Errors written by other SDKs may miss fields or be plain text.
pub(crate) fn decode_failure(text: &str, serialization: Option<&str>, what: &str) -> Result<Failure> {
    check_format(serialization, what)?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => {
            let name = obj.get("name").and_then(Value::as_str).unwrap_or("Error").to_string();
            let message = match obj.get("message") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let code = obj.get("code").cloned().filter(|v| !v.is_null());
            let data = obj.get("data").cloned().filter(|v| !v.is_null());
            Ok(Failure { name, message, code, data })
        }
        Ok(other) => Ok(Failure::new("Error", other.to_string())),
        Err(_) if serialization.is_none() => Err(Error::UnsupportedSerialization {
            what: what.to_string(),
            format: "unknown (no serialization column, not JSON)".to_string(),
        }),
        Err(_) => Ok(Failure::new("Error", text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip_for_every_arity() {
        let zero = encode_args(&(), "w").unwrap();
        assert_eq!(zero, r#"{"namedArgs":{},"positionalArgs":[]}"#);
        let (): () = decode_args(Some(&zero), Some(PORTABLE_JSON), "w").unwrap();

        let one = encode_args(&(7u32,), "w").unwrap();
        assert_eq!(one, r#"{"namedArgs":{},"positionalArgs":[7]}"#);
        let (n,): (u32,) = decode_args(Some(&one), Some(PORTABLE_JSON), "w").unwrap();
        assert_eq!(n, 7);

        let two = encode_args(&("a".to_string(), vec![1, 2]), "w").unwrap();
        let (s, v): (String, Vec<i32>) = decode_args(Some(&two), None, "w").unwrap();
        assert_eq!((s.as_str(), v), ("a", vec![1, 2]));
    }

    #[test]
    fn inputs_written_by_sql_function_decode() {
        // enqueue_workflow() writes json_build_object output, with spaces.
        let text = r#"{"positionalArgs" : [1,"x"], "namedArgs" : {}}"#;
        let (a, b): (i64, String) = decode_args(Some(text), Some(PORTABLE_JSON), "w").unwrap();
        assert_eq!((a, b.as_str()), (1, "x"));
        let missing: (i64,) = decode_args(Some(r#"{"positionalArgs":[3]}"#), None, "w").unwrap();
        assert_eq!(missing, (3,));
    }

    #[test]
    fn named_args_are_a_clear_error() {
        let err = decode_args::<(i32,)>(Some(r#"{"namedArgs":{"x":1}}"#), None, "inputs of wf")
            .unwrap_err();
        assert!(err.to_string().contains("positional"), "{err}");
    }

    #[test]
    fn foreign_formats_are_refused_by_name() {
        let err = decode::<i32>(Some("gASVAQ=="), Some("py_pickle"), "output of w").unwrap_err();
        assert!(matches!(err, Error::UnsupportedSerialization { ref format, .. } if format == "py_pickle"));
    }

    #[test]
    fn failures_round_trip_and_tolerate_partial_records() {
        let f = Failure::new("Declined", "card declined").with_code(402);
        let text = encode_failure(&f);
        assert_eq!(decode_failure(&text, Some(PORTABLE_JSON), "e").unwrap(), f);
        let partial = decode_failure(r#"{"message":"boom"}"#, Some(PORTABLE_JSON), "e").unwrap();
        assert_eq!(partial, Failure::new("Error", "boom"));
    }
}
