//! DBOS `portable_json`: how inputs, outputs, errors and other payloads are stored.
//!
//! Invariants: everything mainstay writes is compact JSON with `serialization = 'portable_json'`;
//! a row in any other format is reported as [`Error::UnsupportedSerialization`], never guessed
//! at. Workflow inputs are `{"positionalArgs": [...], "namedArgs": {...}}`, and a Rust workflow's
//! arguments are its positional arguments in order.
//!
//! Every payload is bounded: an encoding longer than the limit
//! ([`Config::max_payload_bytes`](crate::Config::max_payload_bytes)) is
//! [`Error::PayloadTooLarge`], and encoding one holds at most the limit in memory (the rest is
//! only counted, so the error can say how large it was). A recorded failure is never refused:
//! one too large is recorded cut down (see [`fit_failure`]).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::error::{Error, Failure, Result};

/// The only serialization format mainstay reads and writes.
pub const PORTABLE_JSON: &str = "portable_json";

/// Encodes a payload as compact JSON, refusing one longer than `limit` bytes; `what` names it
/// in errors ("the output of workflow X").
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, what: &str, limit: usize) -> Result<String> {
    bounded(value, what, limit)?.map_err(|size| too_large(what, size, limit))
}

/// The compact JSON of `value`, or `Err(size)` if it is longer than `limit` bytes.
fn bounded<T: Serialize + ?Sized>(value: &T, what: &str, limit: usize) -> Result<Result<String, usize>> {
    let mut out = Bounded { buf: Vec::new(), len: 0, limit };
    serde_json::to_writer(&mut out, value).map_err(|source| Error::Serialization {
        action: "serialize",
        what: what.to_string(),
        source,
    })?;
    if out.len > limit {
        return Ok(Err(out.len));
    }
    // serde_json writes UTF-8 only; the lossy conversion never replaces anything.
    Ok(Ok(String::from_utf8(out.buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())))
}

pub(crate) fn too_large(what: &str, size: usize, limit: usize) -> Error {
    Error::PayloadTooLarge { what: what.to_string(), size, limit }
}

/// A writer that keeps at most `limit` bytes and counts the rest, so an oversized value costs
/// no more memory than an allowed one.
struct Bounded {
    buf: Vec<u8>,
    len: usize,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.len = self.len.saturating_add(bytes.len());
        if self.len <= self.limit {
            self.buf.extend_from_slice(bytes);
        } else if !self.buf.is_empty() {
            self.buf = Vec::new();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn check_format(serialization: Option<&str>, what: &str) -> Result<()> {
    match serialization {
        None | Some(PORTABLE_JSON) => Ok(()),
        Some(other) => Err(Error::UnsupportedSerialization { what: what.to_string(), format: other.to_string() }),
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
pub(crate) fn decode<T: DeserializeOwned>(text: Option<&str>, serialization: Option<&str>, what: &str) -> Result<T> {
    let value = parse(text, serialization, what)?;
    serde_json::from_value(value).map_err(|source| Error::Serialization { action: "deserialize", what: what.to_string(), source })
}

/// Encodes workflow arguments (a tuple, or `()` for none) as portable inputs of at most
/// `limit` bytes.
pub(crate) fn encode_args<A: Serialize>(args: &A, what: &str, limit: usize) -> Result<String> {
    // Written around the arguments' own JSON rather than through a `Value`, which would copy
    // them: a tuple is already the array of positional arguments, `()` is none, and anything
    // else is the single argument.
    const HEAD: &str = r#"{"namedArgs":{},"positionalArgs":"#;
    let overhead = HEAD.len() + 1;
    let encoded = bounded(args, what, limit.saturating_sub(overhead))?.map_err(|size| too_large(what, size + overhead, limit))?;
    let positional = match encoded.as_str() {
        "null" => "[]".to_string(),
        array if array.starts_with('[') => encoded,
        single => format!("[{single}]"),
    };
    let inputs = format!("{HEAD}{positional}}}");
    if inputs.len() > limit {
        return Err(too_large(what, inputs.len(), limit));
    }
    Ok(inputs)
}

/// Decodes portable inputs into the workflow's argument tuple.
pub(crate) fn decode_args<A: DeserializeOwned>(text: Option<&str>, serialization: Option<&str>, what: &str) -> Result<A> {
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
        Err(_) if empty => serde_json::from_value(Value::Null).map_err(|source| Error::Serialization {
            action: "deserialize",
            what: what.to_string(),
            source,
        }),
        Err(source) => Err(Error::Serialization { action: "deserialize", what: what.to_string(), source }),
    }
}

fn malformed_inputs(what: &str, why: &str) -> Error {
    Error::Failed(Failure::new("InvalidInputs", format!("{what}: {why}")))
}

/// The failure as it can be recorded within `limit` bytes: itself, or, when its encoding is
/// larger, the same name and the start of its message (at most 1000 bytes of each, fewer if the
/// limit needs) with a note saying what was dropped, without code or data. Call it before using
/// a failure both as a record and as a result, so that every reader sees the same failure.
pub(crate) fn fit_failure(f: Failure, what: &str, limit: usize) -> Failure {
    let size = match bounded(&f, what, limit) {
        Ok(Ok(_)) => return f,
        Ok(Err(size)) => size,
        // A Failure is plain data: serializing it cannot fail.
        Err(_) => 0,
    };
    let note = format!(
        "[{what} was {size} bytes, more than the {limit}-byte payload limit \
         (MAINSTAY_MAX_PAYLOAD_BYTES): only the start of its message is recorded, without its code and data]"
    );
    // JSON escapes can make the kept text longer than it is: halve it until the record fits.
    let mut keep = (limit / 2).min(1000);
    loop {
        let cut = Failure {
            name: prefix(&f.name, keep.min(200)).to_string(),
            message: format!("{}… {note}", prefix(&f.message, keep)),
            code: None,
            data: None,
        };
        if matches!(bounded(&cut, what, limit), Ok(Ok(_))) {
            return cut;
        }
        if keep == 0 {
            // Only a very long `what` (a workflow ID of kilobytes) gets here.
            return Failure::new("PayloadTooLarge", "the error was larger than the payload limit and is not recorded");
        }
        keep /= 2;
    }
}

/// The longest prefix of `text` of at most `bytes` bytes that ends on a character boundary.
fn prefix(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Encodes a failure in DBOS's portable error format (bound it with [`fit_failure`] first).
pub(crate) fn encode_failure(f: &Failure) -> String {
    // A Failure is plain data (strings and JSON values): serializing it cannot fail.
    serde_json::to_string(f).unwrap_or_else(|_| format!("{{\"name\":\"Error\",\"message\":{:?},\"code\":null,\"data\":null}}", f.message))
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

    const LIMIT: usize = crate::model::config::DEFAULT_MAX_PAYLOAD_BYTES;

    #[test]
    fn payloads_over_the_limit_are_refused_with_their_size() {
        let value = "x".repeat(100);
        assert_eq!(encode(&value, "v", 102).unwrap().len(), 102, "the quotes count, and the limit is inclusive");
        match encode(&value, "the output of workflow w", 101) {
            Err(Error::PayloadTooLarge { what, size, limit }) => {
                assert_eq!((what.as_str(), size, limit), ("the output of workflow w", 102, 101));
            }
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        let err = encode(&value, "the output of workflow w", 101).unwrap_err().to_string();
        assert!(err.contains("the output of workflow w is 102 bytes") && err.contains("MAINSTAY_MAX_PAYLOAD_BYTES"), "{err}");
    }

    #[test]
    fn inputs_count_their_wrapping() {
        let exact = encode_args(&("abc",), "w", LIMIT).unwrap();
        assert_eq!(exact, r#"{"namedArgs":{},"positionalArgs":["abc"]}"#);
        assert_eq!(encode_args(&("abc",), "w", exact.len()).unwrap(), exact);
        match encode_args(&("abc",), "w", exact.len() - 1) {
            Err(Error::PayloadTooLarge { size, .. }) => assert_eq!(size, exact.len()),
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        // A single non-tuple argument is wrapped in the array, and counted with it.
        assert_eq!(encode_args(&5, "w", LIMIT).unwrap(), r#"{"namedArgs":{},"positionalArgs":[5]}"#);
        assert!(matches!(encode_args(&5, "w", 36), Err(Error::PayloadTooLarge { size: 37, .. })));
    }

    #[test]
    fn oversized_failures_are_cut_down_to_fit() {
        let small = Failure::new("Declined", "card declined").with_code(402);
        assert_eq!(fit_failure(small.clone(), "e", 1024), small);
        let huge = Failure::new("Huge", "y".repeat(10_000)).with_data(vec![0; 1000]);
        let fitted = fit_failure(huge, "the error of workflow w", 2048);
        assert!(encode_failure(&fitted).len() <= 2048, "{}", encode_failure(&fitted).len());
        assert_eq!((fitted.name.as_str(), fitted.code.is_none(), fitted.data.is_none()), ("Huge", true, true));
        assert!(fitted.message.starts_with(&"y".repeat(1000)) && fitted.message.contains("payload limit"), "{}", fitted.message);
    }

    #[test]
    fn args_round_trip_for_every_arity() {
        let zero = encode_args(&(), "w", LIMIT).unwrap();
        assert_eq!(zero, r#"{"namedArgs":{},"positionalArgs":[]}"#);
        let (): () = decode_args(Some(&zero), Some(PORTABLE_JSON), "w").unwrap();

        let one = encode_args(&(7u32,), "w", LIMIT).unwrap();
        assert_eq!(one, r#"{"namedArgs":{},"positionalArgs":[7]}"#);
        let (n,): (u32,) = decode_args(Some(&one), Some(PORTABLE_JSON), "w").unwrap();
        assert_eq!(n, 7);

        let two = encode_args(&("a".to_string(), vec![1, 2]), "w", LIMIT).unwrap();
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
        let err = decode_args::<(i32,)>(Some(r#"{"namedArgs":{"x":1}}"#), None, "inputs of wf").unwrap_err();
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
