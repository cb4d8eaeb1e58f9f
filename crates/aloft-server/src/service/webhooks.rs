//! Webhooks of an app: added (with a secret, made and shown once when not given) and removed,
//! each change with its audit entry. Sending is the delivery job's (`crate::webhooks`).

use aloft_core::webhook::{self, Event};
use aloft_store::db::apps::App;
use aloft_store::db::webhooks::{self, Webhook};
use serde_json::json;

use super::{Actor, Error, Write};
use crate::state::AppState;

/// The longest URL a webhook may have.
const MAX_URL_LEN: usize = 2048;

/// The events asked for, each once, in the documented order; refused when empty or unknown.
pub(crate) fn parse_events(names: &[String]) -> Result<Vec<Event>, Error> {
    let mut events = Vec::new();
    for name in names {
        let event = Event::parse(name.trim()).ok_or_else(|| {
            Error::invalid(
                "invalid_event",
                format!("event {name:?} is not one of publish, rollout, halt, rollback, disable"),
            )
        })?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    if events.is_empty() {
        return Err(Error::invalid(
            "invalid_event",
            "give at least one event: publish, rollout, halt, rollback or disable",
        ));
    }
    events.sort();
    Ok(events)
}

/// An `http://` or `https://` URL with a host.
pub(crate) fn check_url(url: &str) -> Result<(), Error> {
    let invalid = |why: &str| Error::invalid("invalid_webhook_url", format!("webhook URL {url:?} {why}"));
    if url.len() > MAX_URL_LEN {
        return Err(invalid("is longer than 2048 characters"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("must start with http:// or https://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.starts_with('@') {
        return Err(invalid("has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("contains spaces or control characters"));
    }
    Ok(())
}

/// The scheme and host of a URL [`check_url`] accepted.
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    &url[..end]
}

/// A new webhook of `app`: returns it with its secret (the one given, or a new one).
pub(crate) async fn add_webhook(
    state: &AppState,
    by: &Actor,
    app: &App,
    url: &str,
    events: &[String],
    secret: Option<&str>,
) -> Result<(Webhook, String), Error> {
    check_url(url)?;
    let events: Vec<String> = parse_events(events)?.iter().map(|e| e.as_str().to_owned()).collect();
    let secret = match secret {
        Some(s) if s.is_empty() || s.len() > 256 => {
            return Err(Error::invalid("invalid_secret", "a webhook secret is 1-256 characters"));
        }
        Some(s) => s.to_owned(),
        None => webhook::generate_secret().map_err(|e| Error::internal("making a webhook secret", &e))?,
    };
    let mut write = Write::begin(state).await?;
    let hook = webhooks::insert(&mut write.tx, app.id, url, &events, &secret).await?;
    write
        .commit(by.entry(
            Some(app.slug.as_str()),
            "webhook.add",
            hook.id.to_string(),
            // Not the whole URL: a path may hold a credential (Slack's does).
            json!({"origin": origin(url), "events": events}),
        ))
        .await?;
    Ok((hook, secret))
}

pub(crate) async fn remove_webhook(state: &AppState, by: &Actor, app: &App, id: i64) -> Result<(), Error> {
    let mut write = Write::begin(state).await?;
    webhooks::delete(&mut write.tx, app.id, id).await?;
    write
        .commit(by.entry(Some(app.slug.as_str()), "webhook.remove", id.to_string(), json!({})))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host() {
        for ok in [
            "http://127.0.0.1:9/hook",
            "https://hooks.slack.com/services/T/B/X",
            "https://a",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://x",
            "hooks.example.com",
            "https://",
            "http:///path",
            "https://a b",
            "javascript:alert(1)",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_audit_log_gets_only_the_origin() {
        assert_eq!(
            origin("https://hooks.slack.com/services/T/B/X"),
            "https://hooks.slack.com"
        );
        assert_eq!(origin("http://127.0.0.1:9"), "http://127.0.0.1:9");
    }

    #[test]
    fn events_are_known_unique_and_ordered() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_events(&names(&["halt", "publish", "halt"])).unwrap(),
            vec![Event::Publish, Event::Halt]
        );
        assert!(parse_events(&names(&[])).is_err());
        assert!(parse_events(&names(&["deploy"])).is_err());
    }
}
