//! Messages for request data that does not fit: which field, what it accepts, what was sent.
//!
//! serde, serde_json and the URL-query decoder describe a problem in Rust's terms (`expected
//! struct CreateApp`, `expected u8`, `invalid digit found in string`). Their messages are read
//! here, never sent: the field comes from the path `serde_path_to_error` tracked, what the field
//! accepts from the JSON schema that `/api/v1/openapi.json` also documents, and what was sent from
//! the fixed shapes of serde's own messages (`invalid type: …, expected …`, `missing field …`).

use std::fmt::Write as _;

use schemars::JsonSchema;
use serde_json::Value;
use serde_path_to_error::Segment;

/// Where the data came from, which decides how a location is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Body,
    Query,
}

/// A JSON body that did not deserialise into `T`.
pub fn body_error<T: JsonSchema>(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    json_message::<T>(&parts(err.path()), err.inner())
}

/// A JSON body that failed outside any field (e.g. text after the value).
pub fn json_error<T: JsonSchema>(err: &serde_json::Error) -> String {
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
pub fn query_error<T: JsonSchema>(err: &serde_path_to_error::Error<serde_urlencoded::de::Error>) -> String {
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

/// serde_json's `Display` ends with ` at line L column C`; the message is what comes before.
fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    text.strip_suffix(&suffix).map(str::to_owned).unwrap_or(text)
}

/// serde_json's syntax errors, in words.
fn syntax_problem(text: &str) -> &'static str {
    match text {
        "EOF while parsing a list" => "it ends inside a list (a `]` is missing)",
        "EOF while parsing an object" => "it ends inside an object (a `}` is missing)",
        "EOF while parsing a string" => "it ends inside a string (a closing `\"` is missing)",
        "EOF while parsing a value" => "it ends where a value should be",
        "expected `:`" => "a `:` should follow the field name",
        "expected `,` or `]`" => "a `,` or `]` should come next",
        "expected `,` or `}`" => "a `,` or `}` should come next",
        "expected ident" => "a word is misspelt (only true, false and null are allowed unquoted)",
        "expected value" => "a value should be here (a string, number, object, list, true, false or null)",
        "expected `\"`" => "a field name in double quotes should be here",
        "invalid escape" => "a string has a backslash escape JSON does not know",
        "invalid number" => "a number is malformed",
        "number out of range" => "a number is too large",
        "invalid unicode code point" | "lone leading surrogate in hex escape" | "unexpected end of hex escape" => {
            "a string has a malformed \\u escape"
        }
        "control character (\\u0000-\\u001F) found while parsing a string" => {
            "a string contains a raw control character (escape it, e.g. \\n)"
        }
        "key must be a string" => "field names must be strings in double quotes",
        "trailing comma" => "a `,` is followed by no value",
        "trailing characters" => "there is more text after the JSON value",
        "recursion limit exceeded" => "it is nested too deeply",
        _ => "it is not well-formed JSON",
    }
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

/// Text the caller sent, as a JSON string (so control characters and quotes are escaped).
fn quote_value(text: &str) -> String {
    let short: String = text.chars().take(100).collect();
    Value::String(short).to_string()
}

/// serde's `Unexpected` (what was sent), in words; `None` when it says nothing useful.
fn plain_sent(sent: &str) -> Option<String> {
    let ticked = |prefix: &str| {
        sent.strip_prefix(prefix)
            .and_then(|s| s.strip_prefix('`'))
            .and_then(|s| s.strip_suffix('`'))
            .map(str::to_owned)
    };
    if let Some(s) = sent.strip_prefix("string ") {
        // serde writes the string with Rust's escapes; read it back to quote it as JSON.
        let inner = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s);
        return Some(format!("the string {}", quote_value(&unescape_debug(inner))));
    }
    if let Some(n) = ticked("integer ").or_else(|| ticked("floating point ")) {
        return Some(n);
    }
    if let Some(b) = ticked("boolean ") {
        return Some(b);
    }
    if let Some(c) = ticked("character ") {
        return Some(format!("the string {}", quote_value(&c)));
    }
    match sent {
        "null" | "unit value" => Some("null".to_owned()),
        "sequence" => Some("a list".to_owned()),
        "map" => Some("an object".to_owned()),
        _ => None,
    }
}

/// Undoes the escapes of Rust's `{:?}` for the characters it escapes in a string, enough to
/// quote the text again as JSON. Unknown escapes are kept as they are.
fn unescape_debug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some(c @ ('\\' | '"' | '\'')) => out.push(c),
            Some('u') => {
                let rest: String = chars.by_ref().take_while(|&c| c != '}').collect();
                match rest
                    .strip_prefix('{')
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                {
                    Some(c) => out.push(c),
                    None => {
                        out.push_str("\\u");
                        out.push_str(&rest);
                        out.push('}');
                    }
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// serde's `Expected` texts that have a plain meaning; `None` for anything else (which is never
/// echoed: it may name a Rust type).
fn plain_expected(wanted: &str) -> Option<String> {
    let wanted = wanted.trim();
    let numbers = [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number, 0 or more"),
        ("u64", "a whole number, 0 or more"),
        ("u128", "a whole number, 0 or more"),
        ("usize", "a whole number, 0 or more"),
        ("i8", "a whole number"),
        ("i16", "a whole number"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("i128", "a whole number"),
        ("isize", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
        ("a string", "a string"),
        ("a borrowed string", "a string"),
        ("a boolean", "true or false"),
        ("a sequence", "a list"),
        ("a map", "an object"),
        ("a character", "a single character"),
        ("unit", "null"),
    ];
    if let Some((_, plain)) = numbers.iter().find(|(k, _)| *k == wanted) {
        return Some((*plain).to_owned());
    }
    if wanted.starts_with("struct ")
        || wanted.starts_with("internally tagged enum ")
        || wanted.starts_with("adjacently tagged enum ")
    {
        return Some("an object".to_owned());
    }
    if wanted.starts_with("tuple struct ") {
        return Some("a list".to_owned());
    }
    expected_names(wanted).map(|names| match names.as_slice() {
        [one] => one.clone(),
        names => format!("one of {}", names.join(", ")),
    })
}

/// The names in serde's `one of `a`, `b``, `` `a` or `b` `` and `` `a` `` lists (after an
/// `, expected ` or as the whole text); `None` when the text is not such a list.
fn expected_names(text: &str) -> Option<Vec<String>> {
    let list = text.split_once("expected ").map_or(text, |(_, l)| l);
    let list = list.strip_prefix("one of ").unwrap_or(list);
    let mut names = Vec::new();
    for item in list.split(", ").flat_map(|s| s.split(" or ")) {
        let name = item.trim().strip_prefix('`')?.strip_suffix('`')?;
        names.push(name.to_owned());
    }
    (!names.is_empty()).then_some(names)
}

/// The JSON schema of a request type, walked along an error's path.
struct Schema {
    root: Value,
}

impl Schema {
    fn of<T: JsonSchema>() -> Self {
        Self {
            root: schemars::schema_for!(T).to_value(),
        }
    }

    /// Follows `$ref`s into `$defs`.
    fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        for _ in 0..32 {
            match s
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
                .and_then(|name| self.root.get("$defs").and_then(|d| d.get(name)))
            {
                Some(next) => s = next,
                None => break,
            }
        }
        s
    }

    /// The alternatives of `s` (`anyOf`, `oneOf`, `allOf`), resolved.
    fn alternatives<'a>(&'a self, s: &'a Value) -> Vec<&'a Value> {
        ["anyOf", "oneOf", "allOf"]
            .iter()
            .filter_map(|k| s.get(*k).and_then(Value::as_array))
            .flatten()
            .map(|a| self.resolve(a))
            .collect()
    }

    fn at(&self, path: &[Part]) -> Option<Value> {
        let mut s = self.resolve(&self.root).clone();
        for part in path {
            s = self.child(&s, part)?;
        }
        Some(s)
    }

    /// The schema of `part` inside `s`, resolved. A field that several alternatives define
    /// (the tag of a tagged enum: `"action": {"const": "start"}`, `{"const": "set"}`…) accepts
    /// what any of them accepts.
    fn child(&self, s: &Value, part: &Part) -> Option<Value> {
        let s = self.resolve(s);
        let own = match part {
            Part::Key(k) => s.get("properties").and_then(|p| p.get(k)),
            Part::Index(_) => s.get("items"),
        };
        if let Some(own) = own {
            return Some(self.resolve(own).clone());
        }
        let found: Vec<Value> = self
            .alternatives(s)
            .into_iter()
            .filter_map(|a| self.child(a, part))
            .collect();
        let literals: Option<Vec<Value>> = found
            .iter()
            .map(|f| match (f.get("const"), f.get("enum").and_then(Value::as_array)) {
                (Some(c), _) => Some(vec![c.clone()]),
                (None, Some(e)) => Some(e.clone()),
                (None, None) => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat());
        match (found.len(), literals) {
            (0, _) => None,
            (1, _) | (_, None) => found.into_iter().next(),
            (_, Some(mut values)) => {
                values.dedup();
                Some(serde_json::json!({ "enum": values }))
            }
        }
    }

    /// The field names an object accepts (with those of its alternatives).
    fn field_names(&self, s: &Value) -> Vec<String> {
        let s = self.resolve(s);
        let mut names: Vec<String> = s
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for a in self.alternatives(s) {
            for name in self.field_names(a) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// What a value of schema `s` is, in words: "a string", "one of ios, android", "a whole
    /// number from 0 to 100", "a UUID"…
    fn describe(&self, s: &Value) -> Option<String> {
        let s = self.resolve(s);
        if s == &Value::Bool(true) || s.as_object().is_some_and(|o| o.is_empty()) {
            return Some("any JSON value".to_owned());
        }
        if let Some(c) = s.get("const") {
            return Some(literal(c));
        }
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            let names: Vec<String> = values.iter().map(literal).collect();
            return Some(match names.as_slice() {
                [one] => one.clone(),
                _ => format!("one of {}", names.join(", ")),
            });
        }
        let alternatives = self.alternatives(s);
        if !alternatives.is_empty() && s.get("type").is_none() {
            let nullable = alternatives.iter().any(|a| a.get("type") == Some(&Value::from("null")));
            let mut kinds: Vec<String> = Vec::new();
            for a in alternatives
                .iter()
                .filter(|a| a.get("type") != Some(&Value::from("null")))
            {
                let d = if a.get("properties").is_some() {
                    "an object".to_owned()
                } else {
                    self.describe(a)?
                };
                if !kinds.contains(&d) {
                    kinds.push(d);
                }
            }
            return Some(or_null(kinds.join(" or "), nullable));
        }
        if s.get("properties").is_some() && s.get("type").is_none() {
            return Some("an object".to_owned());
        }
        let types: Vec<&str> = match s.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        let kinds: Vec<String> = types
            .iter()
            .filter(|t| **t != "null")
            .map(|t| self.describe_type(s, t))
            .collect();
        if kinds.is_empty() {
            return Some("null".to_owned());
        }
        Some(or_null(kinds.join(" or "), types.contains(&"null")))
    }

    fn describe_type(&self, s: &Value, kind: &str) -> String {
        let number = |k: &str| s.get(k).and_then(Value::as_f64);
        match kind {
            "string" => match (s.get("format").and_then(Value::as_str), s.get("pattern")) {
                (Some("uuid"), _) => "a UUID (like 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d)".to_owned(),
                (Some("date-time"), _) => "a date and time (RFC 3339)".to_owned(),
                (_, Some(_)) => match s.get("description").and_then(Value::as_str) {
                    Some(d) => format!("a string: {}", lower_first(d.trim_end_matches('.'))),
                    None => "a string".to_owned(),
                },
                _ => "a string".to_owned(),
            },
            "integer" => match (number("minimum"), number("maximum")) {
                (Some(lo), Some(hi)) => format!("a whole number from {lo} to {hi}"),
                (Some(lo), None) => format!("a whole number, {lo} or more"),
                (None, Some(hi)) => format!("a whole number up to {hi}"),
                (None, None) => "a whole number".to_owned(),
            },
            "number" => "a number".to_owned(),
            "boolean" => "true or false".to_owned(),
            "array" => match s.get("items").and_then(|i| self.describe(i)) {
                Some(item) => format!("a list of {}", plural(&item)),
                None => "a list".to_owned(),
            },
            "object" => "an object".to_owned(),
            _ => "a value of another kind".to_owned(),
        }
    }
}

fn or_null(what: String, nullable: bool) -> String {
    if nullable { format!("{what} (or null)") } else { what }
}

/// A JSON literal from a schema (`enum`, `const`), written as a person would: strings bare.
fn literal(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// "a string" → "strings", "an object" → "objects"; anything else as "items that are …".
fn plural(item: &str) -> String {
    for (one, many) in [
        ("a string: ", "strings: "),
        ("a string", "strings"),
        ("an object", "objects"),
        ("a whole number", "whole numbers"),
        ("a UUID", "UUIDs"),
    ] {
        if let Some(rest) = item.strip_prefix(one) {
            return format!("{many}{rest}");
        }
    }
    format!("items that are {item}")
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
