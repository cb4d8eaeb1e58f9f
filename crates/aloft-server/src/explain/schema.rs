//! What a field accepts, in words, from the JSON schema of the request type (the schema
//! `/api/v1/openapi.json` documents).

use schemars::JsonSchema;
use serde_json::Value;

use super::Part;

/// The JSON schema of a request type, walked along an error's path.
pub(super) struct Schema {
    root: Value,
}

impl Schema {
    pub(super) fn of<T: JsonSchema>() -> Self {
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

    pub(super) fn at(&self, path: &[Part]) -> Option<Value> {
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
    pub(super) fn field_names(&self, s: &Value) -> Vec<String> {
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
    pub(super) fn describe(&self, s: &Value) -> Option<String> {
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
