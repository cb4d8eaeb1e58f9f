//! serde's, serde_json's and the URL-query decoder's messages, read back: what was sent, what
//! serde wanted, and JSON syntax errors, in words. Nothing here is echoed as serde wrote it.

use serde_json::Value;

/// serde_json's `Display` ends with ` at line L column C`; the message is what comes before.
pub(super) fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    text.strip_suffix(&suffix).map(str::to_owned).unwrap_or(text)
}

/// serde_json's syntax errors, in words.
pub(super) fn syntax_problem(text: &str) -> &'static str {
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

/// Text the caller sent, as a JSON string (so control characters and quotes are escaped).
pub(super) fn quote_value(text: &str) -> String {
    let short: String = text.chars().take(100).collect();
    Value::String(short).to_string()
}

/// serde's `Unexpected` (what was sent), in words; `None` when it says nothing useful.
pub(super) fn plain_sent(sent: &str) -> Option<String> {
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
pub(super) fn unescape_debug(s: &str) -> String {
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
pub(super) fn plain_expected(wanted: &str) -> Option<String> {
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
pub(super) fn expected_names(text: &str) -> Option<Vec<String>> {
    let list = text.split_once("expected ").map_or(text, |(_, l)| l);
    let list = list.strip_prefix("one of ").unwrap_or(list);
    let mut names = Vec::new();
    for item in list.split(", ").flat_map(|s| s.split(" or ")) {
        let name = item.trim().strip_prefix('`')?.strip_suffix('`')?;
        names.push(name.to_owned());
    }
    (!names.is_empty()).then_some(names)
}
