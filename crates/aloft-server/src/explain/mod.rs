//! Messages for request data that does not fit: which field, what it accepts, what was sent.
//!
//! serde, serde_json and the URL-query decoder describe a problem in Rust's terms (`expected
//! struct CreateApp`, `expected u8`, `invalid digit found in string`). Their messages are read
//! here, never sent: the field comes from the path `serde_path_to_error` tracked, what the field
//! accepts from the JSON schema that `/api/v1/openapi.json` also documents, and what was sent from
//! the fixed shapes of serde's own messages (`invalid type: …, expected …`, `missing field …`).
//!
//! Here: the entry points and the message itself. `serde_text` reads serde's and serde_json's
//! messages; `schema` describes what a field accepts from the request type's JSON schema.

mod schema;
mod serde_text;

use std::fmt::Write as _;

use schemars::JsonSchema;
use serde_json::Value;
use serde_path_to_error::Segment;

use schema::Schema;
use serde_text::{expected_names, plain_expected, plain_sent, quote_value, strip_position, syntax_problem};

/// Where the data came from, which decides how a location is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Body,
    Query,
}

/// A JSON body that did not deserialise into `T`.
pub(crate) fn body_error<T: JsonSchema>(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    json_message::<T>(&parts(err.path()), err.inner())
}

/// A JSON body that failed outside any field (e.g. text after the value).
pub(crate) fn json_error<T: JsonSchema>(err: &serde_json::Error) -> String {
    json_message::<T>(&[], err)
}

fn json_message<T: JsonSchema>(path: &[Part], inner: &serde_json::Error) -> String {
    let text = strip_position(inner);
    let position = match inner.line() {
        0 => String::new(),
        line => format!(" (line {line}, column {})", inner.column()),
    };
    if inner.is_eof() || inner.is_syntax() {
        if text == "EOF while parsing a value" && inner.line() == 1 && inner.column() == 0 {
            return "the body is empty; send a JSON object".to_owned();
        }
        return format!("the body is not valid JSON: {}{position}", syntax_problem(&text));
    }
    format!("{}{position}", explain::<T>(Source::Body, path, &text))
}

/// A query string that did not deserialise into `T`.
pub(crate) fn query_error<T: JsonSchema>(err: &serde_path_to_error::Error<serde_urlencoded::de::Error>) -> String {
    let path = parts(err.path());
    explain::<T>(Source::Query, &path, &err.inner().to_string())
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Key(String),
    Index(usize),
}

fn parts(path: &serde_path_to_error::Path) -> Vec<Part> {
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Part::Index(*index)),
            Segment::Map { key } => Some(Part::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}
/// The message for a data error at `path`, whose serde text is `text`.
fn explain<T: JsonSchema>(source: Source, path: &[Part], text: &str) -> String {
    let schema = Schema::of::<T>();
    let here = schema.at(path);
    // A query parameter cannot be null: leave that out of what one accepts.
    let accepts = |s: Option<Value>| {
        s.and_then(|s| schema.describe(&s)).map(|d| match source {
            Source::Query => d.replace(" (or null)", ""),
            Source::Body => d,
        })
    };
    let location = locate(source, path);

    if let Some(rest) = text.strip_prefix("unknown field `") {
        // The path ends with the unknown key (serde_path_to_error records a key before reading
        // it); without one, the name comes from the message, JSON-quoted since the caller chose it.
        let (name, parent) = match path.last() {
            Some(Part::Key(_)) => (location.clone(), &path[..path.len() - 1]),
            _ => {
                // serde writes "unknown field `NAME`, expected …" or "…`, there are no fields".
                let sent = rest
                    .rsplit_once("`, expected ")
                    .or_else(|| rest.rsplit_once("`, there are no fields"))
                    .map_or(rest, |(n, _)| n);
                let kind = if source == Source::Body {
                    "field"
                } else {
                    "query parameter"
                };
                (format!("{kind} {}", quote_name(sent)), path)
            }
        };
        let list = expected_names(rest).or_else(|| schema.at(parent).map(|s| schema.field_names(&s)));
        return match list {
            Some(list) if !list.is_empty() => format!("{name} is not accepted; accepted here: {}", list.join(", ")),
            _ => format!("{name} is not accepted; nothing is accepted here"),
        };
    }
    if let Some(rest) = text.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default().to_owned();
        let mut full = path.to_vec();
        full.push(Part::Key(field));
        let missing = locate(source, &full);
        return match accepts(schema.at(&full)) {
            Some(what) => format!("{missing} is required: {what}"),
            None => format!("{missing} is required"),
        };
    }
    if let Some(rest) = text.strip_prefix("duplicate field `") {
        let field = rest.split('`').next().unwrap_or_default().to_owned();
        let mut full = path.to_vec();
        full.push(Part::Key(field));
        return format!("{} is given more than once", locate(source, &full));
    }
    if let Some(rest) = text.strip_prefix("unknown variant `") {
        // The variant is text the caller sent; serde quotes it with backticks.
        let sent = rest.rsplit_once("`, expected").map(|(v, _)| v).unwrap_or_default();
        let what = accepts(here)
            .or_else(|| rest.split_once(", expected ").and_then(|(_, e)| plain_expected(e)))
            .unwrap_or_else(|| "one of the documented values".to_owned());
        return format!("{location} must be {what}, not {}", quote_value(sent));
    }
    if let Some(rest) = text.strip_prefix("invalid length ") {
        // serde reads a struct from a list too, so a list where an object belongs is a length
        // error.
        if here
            .as_ref()
            .is_some_and(|h| h.get("type") == Some(&Value::from("object")))
        {
            return format!("{location} must be an object, not a list");
        }
        let what = accepts(here)
            .or_else(|| rest.split_once(", expected ").and_then(|(_, e)| plain_expected(e)))
            .unwrap_or_else(|| "a list of another length".to_owned());
        return format!("{location} has the wrong number of items: it must be {what}");
    }
    let shaped = text
        .strip_prefix("invalid type: ")
        .or_else(|| text.strip_prefix("invalid value: "));
    if let Some(rest) = shaped {
        // `rest` is `<what was sent>, expected <what serde wanted>`; what was sent may itself
        // contain `, expected` (it can be a string from the request), what serde wanted cannot.
        let (sent, wanted) = rest.rsplit_once(", expected ").unwrap_or((rest, ""));
        let what = accepts(here)
            .or_else(|| plain_expected(wanted))
            .unwrap_or_else(|| "a value of another kind".to_owned());
        return match plain_sent(sent) {
            Some(sent) => format!("{location} must be {what}, not {sent}"),
            None => format!("{location} must be {what}"),
        };
    }
    // Anything else is a type's own check (a hash, a UUID, a number that does not parse): say
    // what the field accepts, not what the parser said.
    match accepts(here) {
        Some(what) => format!("{location} must be {what}"),
        None => format!("{location} is not valid"),
    }
}

/// `field `a.b[0]`` / `query parameter `limit`` / `the body`.
fn locate(source: Source, path: &[Part]) -> String {
    match (source, path) {
        (Source::Body, []) => "the body".to_owned(),
        (Source::Query, []) => "the query string".to_owned(),
        (Source::Body, _) => format!("field {}", location_of(path)),
        (Source::Query, _) => format!("query parameter {}", location_of(path)),
    }
}

/// `a.b[0].c` in backticks; keys that are not plain words are JSON-quoted.
fn location_of(path: &[Part]) -> String {
    let mut out = String::from("`");
    for (i, part) in path.iter().enumerate() {
        match part {
            Part::Index(n) => {
                let _ = write!(out, "[{n}]");
            }
            Part::Key(k) if is_plain(k) => {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(k);
            }
            Part::Key(k) => {
                let _ = write!(out, "[{}]", Value::String(k.clone()));
            }
        }
    }
    out.push('`');
    out
}

fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn quote_name(name: &str) -> String {
    if is_plain(name) {
        format!("`{name}`")
    } else {
        Value::String(name.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use aloft_core::api::{ChannelRolloutRequest, CreateApp, GcRequest, PublishRequest, SetRollout};

    use super::*;

    fn body<T: JsonSchema + serde::de::DeserializeOwned>(json: &str) -> String {
        match crate::extract::parse_json::<T>(json.as_bytes()) {
            Ok(_) => panic!("{json} was accepted"),
            Err(e) => e.message,
        }
    }

    /// The message without its ` (line L, column C)`.
    fn unplaced(message: &str) -> &str {
        message.rsplit_once(" (line ").map_or(message, |(m, _)| m)
    }

    #[test]
    fn data_errors_name_the_field_and_what_it_accepts() {
        assert_eq!(
            body::<CreateApp>("{\n  \"slug\": 5\n}"),
            "field `slug` must be a string, not 5 (line 2, column 11)"
        );
        assert_eq!(
            unplaced(&body::<CreateApp>("[]")),
            "the body must be an object, not a list"
        );
        assert_eq!(
            unplaced(&body::<CreateApp>(r#"{"slug": 5}"#)),
            "field `slug` must be a string, not 5"
        );
        assert_eq!(unplaced(&body::<CreateApp>("{}")), "field `slug` is required: a string");
        assert_eq!(
            unplaced(&body::<CreateApp>(r#"{"slug":"a","sulg":"b"}"#)),
            "field `sulg` is not accepted; accepted here: slug"
        );
        assert_eq!(
            unplaced(&body::<SetRollout>(r#"{"percentage": 300}"#)),
            "field `percentage` must be a whole number from 0 to 100, not 300"
        );
        assert_eq!(
            unplaced(&body::<SetRollout>(r#"{"percentage": "abc"}"#)),
            "field `percentage` must be a whole number from 0 to 100, not the string \"abc\""
        );
        assert_eq!(
            unplaced(&body::<GcRequest>(r#"{"grace_seconds": -1}"#)),
            "field `grace_seconds` must be a whole number, 0 or more (or null), not -1"
        );
        let publish = r#"{"channel":"production","updates":[{"platform":"web","runtime_version":"1",
            "launch_asset":{"hash":"x","ext":"js"}}]}"#;
        let message = body::<PublishRequest>(publish);
        assert!(
            message.starts_with("field `updates[0].platform` must be one of ios, android, not \"web\""),
            "{message}"
        );
        let publish = r#"{"channel":"production","updates":[{"platform":"ios","runtime_version":"1",
            "launch_asset":{"hash":"x","ext":"js"}}]}"#;
        let message = body::<PublishRequest>(publish);
        assert!(
            message.starts_with("field `updates[0].launch_asset.hash` must be a string: unpadded base64url"),
            "{message}"
        );
        let commit = r#"{"updates":[],"commit":{"group_id":"nope","created_at":"x","updates":[]}}"#;
        let message = body::<PublishRequest>(commit);
        assert!(
            message.starts_with("field `commit.group_id` must be a UUID"),
            "{message}"
        );
    }

    #[test]
    fn channel_rollout_errors_name_the_field() {
        let message = body::<ChannelRolloutRequest>(r#"{"action":"start","branch":"b","percentage":"x"}"#);
        assert!(
            message.starts_with("field `percentage` must be a whole number from 0 to 100, not the string \"x\""),
            "{message}"
        );
        let message = body::<ChannelRolloutRequest>(r#"{"action":"grow"}"#);
        assert!(
            message.starts_with("field `action` must be one of start, set, end, revert, not \"grow\""),
            "{message}"
        );
        let message = body::<ChannelRolloutRequest>(r#"{"action":"start","percentage":5}"#);
        assert!(message.starts_with("field `branch` is required: a string"), "{message}");
    }

    #[test]
    fn syntax_errors_say_where() {
        assert_eq!(body::<CreateApp>(""), "the body is empty; send a JSON object");
        assert_eq!(
            body::<CreateApp>("{\"slug\": \"a\""),
            "the body is not valid JSON: it ends inside an object (a `}` is missing) (line 1, column 12)"
        );
        assert_eq!(
            body::<CreateApp>("{\"slug\": \"a\"} x"),
            "the body is not valid JSON: there is more text after the JSON value (line 1, column 15)"
        );
    }

    #[test]
    fn strings_from_the_request_are_quoted_as_json() {
        let message = body::<SetRollout>("{\"percentage\": \"a\\u001b[2J\\\", expected x\"}");
        assert!(
            message.contains(r#"not the string "a\u001b[2J\", expected x""#),
            "{message}"
        );
        assert!(!message.contains('\u{1b}'), "{message}");
    }
}
