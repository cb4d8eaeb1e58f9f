//! Webhooks, the pure part: which audited change is which event, the signature a receiver
//! checks, a new secret, and the one-line text of a payload (`docs/webhooks.md`).

use std::fmt;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// The header that carries [`signature`].
pub const SIGNATURE_HEADER: &str = "aloft-signature";
/// The header that carries the delivery's id (the same on every attempt of one delivery).
pub const DELIVERY_HEADER: &str = "aloft-delivery";
/// The header that carries the event's name.
pub const EVENT_HEADER: &str = "aloft-event";

/// What a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Event {
    /// An update group was published or republished.
    Publish,
    /// A rollout was raised, completed or reverted (a group's, or a channel's branch rollout).
    Rollout,
    /// A rollout was halted by its own health check.
    Halt,
    /// A channel was rolled back (to its previous group, or to the embedded update).
    Rollback,
    /// A group was disabled.
    Disable,
}

impl Event {
    pub const ALL: [Event; 5] = [
        Event::Publish,
        Event::Rollout,
        Event::Halt,
        Event::Rollback,
        Event::Disable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Publish => "publish",
            Event::Rollout => "rollout",
            Event::Halt => "halt",
            Event::Rollback => "rollback",
            Event::Disable => "disable",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The event an audit action is, if any: the audit log is the webhooks' outbox.
    pub fn of_action(action: &str) -> Option<Self> {
        match action {
            "publish" | "republish" => Some(Event::Publish),
            "rollout.set" | "rollout.complete" | "rollout.revert" | "channel.rollout" => Some(Event::Rollout),
            "rollout.halt" => Some(Event::Halt),
            "rollback" | "rollback.embedded" => Some(Event::Rollback),
            "group.disable" => Some(Event::Disable),
            _ => None,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of [`SIGNATURE_HEADER`]: `sha256=` and the lower-case hex HMAC-SHA256 of the exact
/// body bytes, keyed with the secret's UTF-8 bytes.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// A new secret: 32 random bytes, as 64 hex digits.
pub fn generate_secret() -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The one line a chat message shows: `[demo] publish by ci (token 3): published ... to production`.
/// Ready to post as Slack's `text` as it is: line breaks become spaces, and `&`, `<` and `>` are
/// escaped as Slack's message format asks (so a name or summary never turns into a link or a
/// mention).
pub fn text(app: &str, event: Event, actor: &str, summary: &str) -> String {
    let summary = if summary.is_empty() { "(no summary)" } else { summary };
    let line = format!("[{app}] {event} by {actor}: {summary}");
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn every_event_parses_back_and_every_mapped_action_is_known() {
        for e in Event::ALL {
            assert_eq!(Event::parse(e.as_str()), Some(e));
        }
        assert_eq!(Event::parse("Publish"), None);
        assert_eq!(Event::of_action("republish"), Some(Event::Publish));
        assert_eq!(Event::of_action("channel.rollout"), Some(Event::Rollout));
        assert_eq!(Event::of_action("rollout.halt"), Some(Event::Halt));
        assert_eq!(Event::of_action("rollback.embedded"), Some(Event::Rollback));
        assert_eq!(Event::of_action("group.disable"), Some(Event::Disable));
        assert_eq!(Event::of_action("token.create"), None);
    }

    #[test]
    fn secrets_are_fresh_hex() {
        let (a, b) = (generate_secret().unwrap(), generate_secret().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn text_is_one_line_with_the_app_event_and_summary() {
        assert_eq!(
            text("demo", Event::Halt, "halt job", "halted at 5 %"),
            "[demo] halt by halt job: halted at 5 %"
        );
        assert_eq!(
            text("demo", Event::Publish, "ci", "fix <@here> & more\nsecond line"),
            "[demo] publish by ci: fix &lt;@here&gt; &amp; more second line"
        );
    }
}
