//! What devices report about themselves in update checks (docs/protocol.md §1.1, §8.4).

use sfv::{BareItem, List, ListEntry, Parser};
use uuid::Uuid;

/// The most update ids a client lists in `Expo-Recent-Failed-Update-IDs`; more are ignored.
pub const MAX_FAILED_IDS: usize = 5;

/// The longest `Expo-Fatal-Error` the client sends (it truncates to this many characters).
pub const MAX_FATAL_ERROR_CHARS: usize = 1024;

/// The update ids in an `Expo-Recent-Failed-Update-IDs` value: an RFC 8941 list of strings,
/// each a UUID. Members that are not UUID strings are skipped, and a value that is not a list
/// gives none: a report is information, never a reason to refuse a check.
pub fn failed_update_ids(value: &[u8]) -> Vec<Uuid> {
    let Ok(list) = Parser::new(value).parse::<List>() else {
        return Vec::new();
    };
    let mut ids: Vec<Uuid> = list
        .iter()
        .filter_map(|entry| match entry {
            ListEntry::Item(item) => match &item.bare_item {
                BareItem::String(s) => Uuid::parse_str(s.as_str()).ok(),
                _ => None,
            },
            ListEntry::InnerList(_) => None,
        })
        .take(MAX_FAILED_IDS)
        .collect();
    ids.dedup();
    ids
}

/// An `Expo-Fatal-Error` text as it is kept: trimmed, at most [`MAX_FATAL_ERROR_CHARS`]
/// characters; `None` when empty.
pub fn fatal_error(value: &str) -> Option<&str> {
    let text = value.trim();
    let end = text
        .char_indices()
        .nth(MAX_FATAL_ERROR_CHARS)
        .map_or(text.len(), |(i, _)| i);
    let text = &text[..end];
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_ids_are_read_leniently() {
        let a = "3f2a8c1e-9b7d-4c6e-8a5f-1d2e3f4a5b6c";
        let b = "A81C0000-0000-4000-8000-000000000001";
        let ids = failed_update_ids(format!(r#""{a}", "{b}""#).as_bytes());
        assert_eq!(ids, vec![Uuid::parse_str(a).unwrap(), Uuid::parse_str(b).unwrap()]);
        assert_eq!(
            failed_update_ids(format!(r#""{a}", "nope", 7, ("{b}")"#).as_bytes()).len(),
            1
        );
        assert!(failed_update_ids(b"not a list (").is_empty());
        assert!(failed_update_ids(b"").is_empty());
        let many: Vec<String> = (0..8).map(|i| format!(r#""{}""#, Uuid::from_u128(i + 1))).collect();
        assert_eq!(failed_update_ids(many.join(", ").as_bytes()).len(), MAX_FAILED_IDS);
    }

    #[test]
    fn fatal_errors_are_trimmed_and_capped() {
        assert_eq!(fatal_error("  boom \n"), Some("boom"));
        assert_eq!(fatal_error("   "), None);
        let long = "é".repeat(2000);
        assert_eq!(fatal_error(&long).unwrap().chars().count(), MAX_FATAL_ERROR_CHARS);
    }
}
