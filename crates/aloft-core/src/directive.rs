//! Directive bodies (docs/protocol.md §2.5). Only these two types exist in the client; any other
//! `type` fails the whole check, so no other can be built here.

use crate::time::Millis;

/// `{"type":"noUpdateAvailable"}`
pub fn no_update_available() -> Vec<u8> {
    br#"{"type":"noUpdateAvailable"}"#.to_vec()
}

/// `{"type":"rollBackToEmbedded","parameters":{"commitTime":"…"}}`; `commit_time` is fixed when
/// the rollback is made, never "now".
pub fn roll_back_to_embedded(commit_time: Millis) -> Vec<u8> {
    format!(
        r#"{{"type":"rollBackToEmbedded","parameters":{{"commitTime":"{}"}}}}"#,
        commit_time.to_iso()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes() {
        assert_eq!(
            String::from_utf8(roll_back_to_embedded(Millis(1_714_566_896_789))).unwrap(),
            r#"{"type":"rollBackToEmbedded","parameters":{"commitTime":"2024-05-01T12:34:56.789Z"}}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&no_update_available()).unwrap();
        assert_eq!(v["type"], "noUpdateAvailable");
    }
}
