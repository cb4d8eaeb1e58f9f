//! Webhooks, their deliveries and every attempt at one.
//!
//! The audit log is the outbox: a webhook's `audit_cursor` is the newest audit entry already
//! turned into its deliveries. Audit entries are numbered under the write lock that every change
//! holds until it commits ([`super::Database::begin_write`]), so they commit in the order of their
//! ids and an entry above the cursor can never appear later below it. Replicas that enqueue the
//! same entry at once make one row (UNIQUE (webhook_id, audit_id)); replicas that send at once
//! take turns through a lease ([`claim`]).

use aloft_core::time::Millis;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::{Conn, Database, DbError, uuid};

#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: i64,
    pub app_id: i64,
    pub url: String,
    /// As stored: comma-separated event names.
    pub events: Vec<String>,
    pub secret: String,
    pub created_at: Millis,
    pub audit_cursor: i64,
}

fn webhook(r: &AnyRow) -> Result<Webhook, DbError> {
    let events: String = r.try_get("events")?;
    Ok(Webhook {
        id: r.try_get("id")?,
        app_id: r.try_get("app_id")?,
        url: r.try_get("url")?,
        events: events.split(',').filter(|e| !e.is_empty()).map(str::to_owned).collect(),
        secret: r.try_get("secret")?,
        created_at: Millis(r.try_get("created_at")?),
        audit_cursor: r.try_get("audit_cursor")?,
    })
}

const WEBHOOK_COLUMNS: &str = "id, app_id, url, events, secret, created_at, audit_cursor";

/// A new webhook of `app_id`; it gets the events of changes committed after it.
pub async fn insert(
    conn: &mut Conn,
    app_id: i64,
    url: &str,
    events: &[String],
    secret: &str,
) -> Result<Webhook, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhooks (app_id, url, events, secret, created_at, audit_cursor) \
         VALUES ($1, $2, $3, $4, $5, (SELECT COALESCE(MAX(id), 0) FROM audit_log)) RETURNING {WEBHOOK_COLUMNS}"
    )))
    .bind(app_id)
    .bind(url)
    .bind(events.join(","))
    .bind(secret)
    .bind(Millis::now().0)
    .fetch_one(&mut *conn)
    .await?;
    webhook(&row)
}

/// The webhooks of one app, oldest first.
pub async fn list(db: &Database, app_id: i64) -> Result<Vec<Webhook>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE app_id = $1 ORDER BY id"
    )))
    .bind(app_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(webhook).collect()
}

/// Every webhook, with its app's slug (what the delivery job works through).
pub async fn all(db: &Database) -> Result<Vec<(Webhook, String)>, DbError> {
    let rows = sqlx::query(
        "SELECT w.id, w.app_id, w.url, w.events, w.secret, w.created_at, w.audit_cursor, a.slug \
         FROM webhooks w JOIN apps a ON a.id = w.app_id ORDER BY w.id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(|r| Ok((webhook(r)?, r.try_get("slug")?))).collect()
}

/// Removes a webhook of `app_id` with its deliveries and their attempts.
pub async fn delete(conn: &mut Conn, app_id: i64, id: i64) -> Result<(), DbError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM webhooks WHERE id = $1 AND app_id = $2")
        .bind(id)
        .bind(app_id)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Err(DbError::NoSuchWebhook);
    }
    sqlx::query(
        "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A delivery about to be made from an audit entry.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: Uuid,
    pub webhook_id: i64,
    pub audit_id: i64,
    pub event: String,
    pub body: String,
    /// When the event happened; a delivery is tried for a day from then.
    pub occurred_at: Millis,
}

/// Records a pending delivery, due now; nothing when another process recorded this webhook's
/// delivery of this audit entry first. Whether this call made it.
pub async fn enqueue(db: &Database, d: &NewDelivery) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, audit_id, event, body, created_at, state, attempts, next_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7) ON CONFLICT (webhook_id, audit_id) DO NOTHING",
    )
    .bind(d.id.to_string())
    .bind(d.webhook_id)
    .bind(d.audit_id)
    .bind(&d.event)
    .bind(&d.body)
    .bind(d.occurred_at.0)
    .bind(Millis::now().0)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves a webhook's cursor forward to `audit_id` (never back).
pub async fn advance(db: &Database, webhook_id: i64, audit_id: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE webhooks SET audit_cursor = $1 WHERE id = $2 AND audit_cursor < $3")
        .bind(audit_id)
        .bind(webhook_id)
        .bind(audit_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// A pending delivery whose time has come, with what sending it takes.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: Uuid,
    pub event: String,
    pub body: String,
    pub occurred_at: Millis,
    pub attempts: i64,
    pub url: String,
    pub secret: String,
}

/// Up to `limit` pending deliveries due at `now` that no one holds, the longest waiting first.
pub async fn due(db: &Database, now: Millis, limit: i64) -> Result<Vec<Due>, DbError> {
    let rows = sqlx::query(
        "SELECT d.id, d.event, d.body, d.created_at, d.attempts, w.url, w.secret \
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.state = 'pending' AND d.next_at <= $1 AND (d.lease_until IS NULL OR d.lease_until < $2) \
         ORDER BY d.next_at LIMIT $3",
    )
    .bind(now.0)
    .bind(now.0)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            Ok(Due {
                id: uuid(&id)?,
                event: r.try_get("event")?,
                body: r.try_get("body")?,
                occurred_at: Millis(r.try_get("created_at")?),
                attempts: r.try_get("attempts")?,
                url: r.try_get("url")?,
                secret: r.try_get("secret")?,
            })
        })
        .collect()
}

/// Takes a pending delivery until `until`, unless someone else holds it; whether it is ours.
pub async fn claim(db: &Database, id: Uuid, now: Millis, until: Millis) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET lease_until = $1 \
         WHERE id = $2 AND state = 'pending' AND (lease_until IS NULL OR lease_until < $3)",
    )
    .bind(until.0)
    .bind(id.to_string())
    .bind(now.0)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How an attempt went.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Millis,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAt(Millis),
    Failed,
}

/// Records attempt number `number` of a delivery and what follows it, and lets go of the lease.
pub async fn record(db: &Database, id: Uuid, number: i64, attempt: &Attempt, next: Next) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    let (state, next_at) = match next {
        Next::Delivered => ("delivered", None),
        Next::RetryAt(at) => ("pending", Some(at.0)),
        Next::Failed => ("failed", None),
    };
    let updated = sqlx::query(
        "UPDATE webhook_deliveries SET state = $1, attempts = $2, next_at = COALESCE($3, next_at), lease_until = NULL \
         WHERE id = $4 AND state = 'pending'",
    )
    .bind(state)
    .bind(number)
    .bind(next_at)
    .bind(id.to_string())
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        // The webhook was removed while its delivery was being sent, or a sender whose lease ran
        // out finished it: nothing left to record.
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, at, status, error, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, attempt) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(number)
    .bind(attempt.at.0)
    .bind(attempt.status.map(i64::from))
    .bind(&attempt.error)
    .bind(attempt.duration_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A delivery as its log shows it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: i64,
    pub event: String,
    pub occurred_at: Millis,
    pub state: String,
    pub next_at: Millis,
    pub attempts: Vec<Attempt>,
}

/// The newest `limit` deliveries of an app's webhooks (of one, if given), with their attempts.
pub async fn deliveries(
    db: &Database,
    app_id: i64,
    webhook_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Delivery>, DbError> {
    let mut conn = db.conn().await?;
    let rows = sqlx::query(
        "SELECT d.id, d.webhook_id, d.event, d.created_at, d.state, d.next_at \
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         WHERE w.app_id = $1 AND (CAST($2 AS BIGINT) IS NULL OR d.webhook_id = $3) \
         ORDER BY d.audit_id DESC, d.webhook_id LIMIT $4",
    )
    .bind(app_id)
    .bind(webhook_id)
    .bind(webhook_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get("id")?;
        let attempts = sqlx::query(
            "SELECT at, status, error, duration_ms FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(&id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|a| {
            let status: Option<i64> = a.try_get("status")?;
            Ok(Attempt {
                at: Millis(a.try_get("at")?),
                status: status.and_then(|s| u16::try_from(s).ok()),
                error: a.try_get("error")?,
                duration_ms: a.try_get("duration_ms")?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
        out.push(Delivery {
            id: uuid(&id)?,
            webhook_id: r.try_get("webhook_id")?,
            event: r.try_get("event")?,
            occurred_at: Millis(r.try_get("created_at")?),
            state: r.try_get("state")?,
            next_at: Millis(r.try_get("next_at")?),
            attempts,
        });
    }
    Ok(out)
}

/// Deletes finished deliveries (and their attempts) of events older than `before`.
pub async fn prune(db: &Database, before: Millis) -> Result<u64, DbError> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "DELETE FROM webhook_attempts WHERE delivery_id IN \
         (SELECT id FROM webhook_deliveries WHERE state <> 'pending' AND created_at < $1)",
    )
    .bind(before.0)
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query("DELETE FROM webhook_deliveries WHERE state <> 'pending' AND created_at < $1")
        .bind(before.0)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}
