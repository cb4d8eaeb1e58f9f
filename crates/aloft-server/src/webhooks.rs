//! Webhook delivery, the two steps the delivery job (`jobs.rs`) repeats: [`enqueue_new`] turns
//! audit entries of subscribed events into delivery rows (the audit log is the outbox; see
//! `aloft_store::db::webhooks`), and [`claim_due`] plus [`Sender::deliver`] send what is due,
//! each delivery held by one sender at a time through a lease. Nothing here runs on a request's
//! path: a slow or dead receiver costs a sender slot, never a publish or a check.
//!
//! Retries: after a failed attempt (no 2xx in [`TIMEOUT`]) the next comes 10 s later, the wait
//! doubling up to an hour, until a day after the event; then the delivery is `failed`.

use std::time::{Duration, Instant};

use aloft_core::api::WebhookPayload;
use aloft_core::time::Millis;
use aloft_core::webhook::{self, DELIVERY_HEADER, EVENT_HEADER, Event, SIGNATURE_HEADER};
use aloft_store::db::audit::{self, Entry};
use aloft_store::db::webhooks::{self, Attempt, Due, NewDelivery, Next};
use aloft_store::{Database, DbError};
use uuid::Uuid;

/// How long a receiver has to answer.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery is ours: longer than an attempt takes, so two senders never send
/// it at once, and short enough that one a crashed sender held is soon tried again.
const LEASE: Duration = Duration::from_secs(60);
/// The first wait after a failed attempt, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(3600));
/// How long after its event a delivery is tried.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Audit entries read at once per webhook.
const BATCH: i64 = 100;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Makes the deliveries of every webhook's new audit entries and moves its cursor past them.
/// Returns how many deliveries this call made.
pub(crate) async fn enqueue_new(db: &Database) -> Result<usize, DbError> {
    let mut made = 0;
    for (hook, slug) in webhooks::all(db).await? {
        let mut cursor = hook.audit_cursor;
        loop {
            let entries = audit::after(db, &slug, cursor, BATCH).await?;
            let Some(&(last, _)) = entries.last() else { break };
            for (audit_id, entry) in &entries {
                let Some(event) = Event::of_action(&entry.action) else {
                    continue;
                };
                if !hook.events.iter().any(|e| e == event.as_str()) {
                    continue;
                }
                let id = Uuid::new_v4();
                let delivery = NewDelivery {
                    id,
                    webhook_id: hook.id,
                    audit_id: *audit_id,
                    event: event.as_str().to_owned(),
                    body: payload(id, event, &slug, entry),
                    occurred_at: entry.at,
                };
                if webhooks::enqueue(db, &delivery).await? {
                    made += 1;
                }
            }
            webhooks::advance(db, hook.id, last).await?;
            cursor = last;
            if i64::try_from(entries.len()).unwrap_or(i64::MAX) < BATCH {
                break;
            }
        }
    }
    Ok(made)
}

/// The JSON body of a delivery (`docs/webhooks.md`).
pub(crate) fn payload(id: Uuid, event: Event, app: &str, entry: &Entry) -> String {
    let summary = entry
        .details
        .get("summary")
        .and_then(|s| s.as_str())
        .map_or_else(|| format!("{} {}", entry.action, entry.target), str::to_owned);
    let body = WebhookPayload {
        id,
        event: event.as_str().to_owned(),
        app: app.to_owned(),
        occurred_at: entry.at.to_iso(),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        text: webhook::text(app, event, &entry.actor, &summary),
        summary,
        details: entry.details.clone(),
    };
    // A struct of strings and a JSON value always serialises.
    serde_json::to_string(&body).unwrap_or_default()
}

/// Claims up to `room` due deliveries (see `webhooks::claim`); what another sender claimed first
/// is skipped.
pub(crate) async fn claim_due(db: &Database, room: usize) -> Result<Vec<Due>, DbError> {
    if room == 0 {
        return Ok(Vec::new());
    }
    let now = Millis::now();
    let mut claimed = Vec::new();
    for due in webhooks::due(db, now, i64::try_from(room).unwrap_or(1)).await? {
        if webhooks::claim(db, due.id, now, Millis(now.0 + millis(LEASE))).await? {
            claimed.push(due);
        }
    }
    Ok(claimed)
}

/// What the next step is after attempt `number` (1-based) of a delivery of an event at
/// `occurred_at` failed at `now`.
fn after_failure(number: i64, occurred_at: Millis, now: Millis) -> Next {
    let doublings = u32::try_from((number - 1).clamp(0, 20)).unwrap_or(20);
    let wait = BACKOFF.0.saturating_mul(2u32.saturating_pow(doublings)).min(BACKOFF.1);
    let at = now.0 + millis(wait);
    if at > occurred_at.0 + millis(GIVE_UP_AFTER) {
        Next::Failed
    } else {
        Next::RetryAt(Millis(at))
    }
}

/// Sends deliveries over HTTP.
#[derive(Clone)]
pub(crate) struct Sender {
    http: reqwest::Client,
}

impl Sender {
    pub(crate) fn new() -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("aloft/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            // A redirect is an answer that is not 2xx: the receiver's URL is the one configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http })
    }

    /// One attempt at a claimed delivery, recorded with what follows it.
    pub(crate) async fn deliver(&self, db: &Database, due: Due) {
        let number = due.attempts + 1;
        let at = Millis::now();
        let started = Instant::now();
        let answer = self
            .http
            .post(&due.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, webhook::signature(&due.secret, due.body.as_bytes()))
            .header(DELIVERY_HEADER, due.id.to_string())
            .header(EVENT_HEADER, &due.event)
            .body(due.body.clone())
            .send()
            .await;
        let duration_ms = millis(started.elapsed());
        let (status, error) = match answer {
            Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
            Ok(response) => (
                Some(response.status().as_u16()),
                Some(format!("the receiver answered {}", response.status())),
            ),
            Err(e) if e.is_timeout() => (None, Some(format!("no answer within {} s", TIMEOUT.as_secs()))),
            Err(e) if e.is_connect() => (None, Some(format!("cannot connect: {}", source_text(&e)))),
            Err(e) => (None, Some(source_text(&e))),
        };
        let next = if error.is_none() {
            Next::Delivered
        } else {
            after_failure(number, due.occurred_at, Millis::now())
        };
        let why = error.as_deref().unwrap_or_default();
        match next {
            Next::Delivered => tracing::debug!(delivery = %due.id, "webhook delivered"),
            Next::RetryAt(_) => {
                tracing::info!(delivery = %due.id, url = %due.url, error = why, attempt = number, "webhook attempt failed; retrying later");
            }
            Next::Failed => {
                tracing::warn!(delivery = %due.id, url = %due.url, error = why, attempt = number, "webhook delivery failed for a day; giving up");
            }
        }
        let attempt = Attempt {
            at,
            status,
            error,
            duration_ms,
        };
        if let Err(e) = webhooks::record(db, due.id, number, &attempt, next).await {
            // The lease runs out and the delivery is tried again.
            tracing::warn!(delivery = %due.id, error = %e, "recording a webhook attempt failed");
        }
    }
}

/// An error with its causes, which reqwest keeps apart.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_bytes_are_stable() {
        let entry = Entry {
            at: Millis(1_764_559_241_512),
            actor: "ci (token 3)".into(),
            app: Some("demo".into()),
            action: "publish".into(),
            target: "production".into(),
            details: serde_json::json!({"summary": "published to production", "published_group": null}),
            remote: "127.0.0.1".into(),
        };
        let id = Uuid::from_u128(0x0d0f_7a8e_3c39_4b53_9d1c_4f7d_6a52_c0c1);
        assert_eq!(
            payload(id, Event::Publish, "demo", &entry),
            r#"{"id":"0d0f7a8e-3c39-4b53-9d1c-4f7d6a52c0c1","event":"publish","app":"demo","#.to_owned()
                + r#""occurred_at":"2025-12-01T03:20:41.512Z","actor":"ci (token 3)","action":"publish","#
                + r#""target":"production","summary":"published to production","#
                + r#""details":{"summary":"published to production","published_group":null},"#
                + r#""text":"[demo] publish by ci (token 3): published to production"}"#
        );
        // Without a summary in the details, the action and target say what happened.
        let bare = Entry {
            details: serde_json::json!({"percentage": 5}),
            action: "rollout.halt".into(),
            actor: "halt job".into(),
            ..entry
        };
        let halted: serde_json::Value = serde_json::from_str(&payload(id, Event::Halt, "demo", &bare)).unwrap();
        assert_eq!(halted["summary"], "rollout.halt production");
        assert_eq!(halted["text"], "[demo] halt by halt job: rollout.halt production");
        assert_eq!(halted["details"]["percentage"], 5);
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_to_an_hour_and_ends_after_a_day() {
        let t0 = Millis(1_000_000_000);
        let wait = |n, now: Millis| match after_failure(n, t0, now) {
            Next::RetryAt(at) => at.0 - now.0,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(1, t0), 10_000);
        assert_eq!(wait(2, t0), 20_000);
        assert_eq!(wait(5, t0), 160_000);
        assert_eq!(wait(10, t0), 3_600_000);
        assert_eq!(wait(60, t0), 3_600_000);
        let late = Millis(t0.0 + 23 * 3_600_000 + 1);
        assert_eq!(after_failure(30, t0, late), Next::Failed);
    }
}
