//! Idempotency keys: the first answer to a write that carried an `Idempotency-Key`, replayed to
//! a retry with the same key instead of acting twice.
//!
//! A request [`claim`]s its key before it acts: the row is inserted with no answer, under a
//! unique (token, key) constraint, so of two requests with one key (on one replica or on
//! several) exactly one acts. The one that acts then [`complete`]s the row with its answer, or
//! [`release`]s it when the answer was transient, so that a retry acts again. A row expires
//! [`EXPIRY_MS`] after it was claimed: [`claim`] treats it as absent, and [`expire`] (run now and
//! then) removes all such rows. A claim that was never completed (the server died in between)
//! may be taken over after [`LEASE_MS`].

use aloft_core::time::Millis;
use sqlx::Row;

use super::{Database, DbError};

/// How long an answer is kept for retries: a day.
pub const EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;

/// How long a claim without an answer blocks its key. Far longer than any request runs; after it,
/// the claim is taken to be abandoned (its server stopped) and a retry may act.
pub const LEASE_MS: i64 = 15 * 60 * 1000;

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request holds the key: act, then [`complete`] or [`release`] with this claim time.
    Acquired { claimed_at: Millis },
    /// A request with the key already finished: its fingerprint and answer.
    Done { fingerprint: String, answer: Stored },
    /// A request with the key is still running: its fingerprint.
    Running { fingerprint: String },
}

/// Removes every row that expired by `now`; returns how many.
pub async fn expire(db: &Database, now: Millis) -> Result<u64, DbError> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(now.0 - EXPIRY_MS)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}

/// Claims `key` of the token `token_id` for a request with `fingerprint`, or says who holds it.
/// An expired key is free again.
pub async fn claim(db: &Database, token_id: i64, key: &str, fingerprint: &str, now: Millis) -> Result<Claim, DbError> {
    // A row can vanish between the insert that conflicted and the read (its request released
    // it, or it expired): then the insert is tried again. Three rounds need two in between.
    for _ in 0..3 {
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO idempotency_keys (token_id, idempotency_key, fingerprint, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (token_id, idempotency_key) DO NOTHING RETURNING token_id",
        )
        .bind(token_id)
        .bind(key)
        .bind(fingerprint)
        .bind(now.0)
        .fetch_optional(db.pool())
        .await?;
        if inserted.is_some() {
            return Ok(Claim::Acquired { claimed_at: now });
        }
        let row = sqlx::query(
            "SELECT fingerprint, created_at, status, content_type, body FROM idempotency_keys \
             WHERE token_id = $1 AND idempotency_key = $2",
        )
        .bind(token_id)
        .bind(key)
        .fetch_optional(db.pool())
        .await?;
        let Some(row) = row else { continue };
        let found: String = row.try_get("fingerprint")?;
        let claimed_at: i64 = row.try_get("created_at")?;
        if claimed_at < now.0 - EXPIRY_MS {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE token_id = $1 AND idempotency_key = $2 AND created_at = $3",
            )
            .bind(token_id)
            .bind(key)
            .bind(claimed_at)
            .execute(db.pool())
            .await?;
            continue;
        }
        let Some(status) = row.try_get::<Option<i64>, _>("status")? else {
            if found == fingerprint && claimed_at < now.0 - LEASE_MS {
                // Abandoned: take it over, unless another retry just did.
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET created_at = $1 \
                     WHERE token_id = $2 AND idempotency_key = $3 AND status IS NULL AND created_at = $4",
                )
                .bind(now.0)
                .bind(token_id)
                .bind(key)
                .bind(claimed_at)
                .execute(db.pool())
                .await?;
                if taken.rows_affected() == 1 {
                    return Ok(Claim::Acquired { claimed_at: now });
                }
                continue;
            }
            return Ok(Claim::Running { fingerprint: found });
        };
        return Ok(Claim::Done {
            fingerprint: found,
            answer: Stored {
                status: u16::try_from(status).unwrap_or(500),
                content_type: row.try_get("content_type")?,
                body: row.try_get::<Option<Vec<u8>>, _>("body")?.unwrap_or_default(),
            },
        });
    }
    // Claimed and released over and over: as good as running.
    Ok(Claim::Running {
        fingerprint: fingerprint.to_owned(),
    })
}

/// Stores the answer of the request that claimed `key` at `claimed_at`. False when the claim was
/// lost meanwhile (expired, or taken over after its lease).
pub async fn complete(
    db: &Database,
    token_id: i64,
    key: &str,
    claimed_at: Millis,
    answer: &Stored,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE idempotency_keys SET status = $1, content_type = $2, body = $3 \
         WHERE token_id = $4 AND idempotency_key = $5 AND created_at = $6 AND status IS NULL",
    )
    .bind(i64::from(answer.status))
    .bind(answer.content_type.as_deref())
    .bind(answer.body.as_slice())
    .bind(token_id)
    .bind(key)
    .bind(claimed_at.0)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives up the claim on `key` made at `claimed_at`, so that a retry acts.
pub async fn release(db: &Database, token_id: i64, key: &str, claimed_at: Millis) -> Result<(), DbError> {
    sqlx::query(
        "DELETE FROM idempotency_keys \
         WHERE token_id = $1 AND idempotency_key = $2 AND created_at = $3 AND status IS NULL",
    )
    .bind(token_id)
    .bind(key)
    .bind(claimed_at.0)
    .execute(db.pool())
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh database of the backend under test (`ALOFT_TEST_BACKEND`).
    async fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let (db, _blobs) = crate::testing::Backend::from_env().fresh(dir.path()).open().await;
        (dir, db)
    }

    fn answer(status: u16, body: &[u8]) -> Stored {
        Stored {
            status,
            content_type: Some("application/json".into()),
            body: body.to_vec(),
        }
    }

    const T0: Millis = Millis(1_700_000_000_000);

    #[tokio::test]
    async fn first_claim_acts_and_later_ones_see_it_running_then_done() {
        let (_dir, db) = db().await;
        assert_eq!(
            claim(&db, 1, "k", "fp", T0).await.unwrap(),
            Claim::Acquired { claimed_at: T0 }
        );
        let later = Millis(T0.0 + 1000);
        assert_eq!(
            claim(&db, 1, "k", "fp", later).await.unwrap(),
            Claim::Running {
                fingerprint: "fp".into()
            }
        );
        assert_eq!(
            claim(&db, 1, "k", "other", later).await.unwrap(),
            Claim::Running {
                fingerprint: "fp".into()
            }
        );
        assert!(complete(&db, 1, "k", T0, &answer(201, b"{\"a\":1}")).await.unwrap());
        assert_eq!(
            claim(&db, 1, "k", "fp", later).await.unwrap(),
            Claim::Done {
                fingerprint: "fp".into(),
                answer: answer(201, b"{\"a\":1}")
            }
        );
        // Completing twice changes nothing.
        assert!(!complete(&db, 1, "k", T0, &answer(400, b"")).await.unwrap());
    }

    #[tokio::test]
    async fn keys_belong_to_their_token() {
        let (_dir, db) = db().await;
        assert!(matches!(
            claim(&db, 1, "k", "fp", T0).await.unwrap(),
            Claim::Acquired { .. }
        ));
        assert!(matches!(
            claim(&db, 2, "k", "fp", T0).await.unwrap(),
            Claim::Acquired { .. }
        ));
    }

    #[tokio::test]
    async fn a_released_claim_frees_the_key() {
        let (_dir, db) = db().await;
        claim(&db, 1, "k", "fp", T0).await.unwrap();
        release(&db, 1, "k", T0).await.unwrap();
        let later = Millis(T0.0 + 1);
        assert_eq!(
            claim(&db, 1, "k", "fp", later).await.unwrap(),
            Claim::Acquired { claimed_at: later }
        );
        // The first claim's release no longer touches the new one.
        release(&db, 1, "k", T0).await.unwrap();
        assert!(matches!(
            claim(&db, 1, "k", "fp", later).await.unwrap(),
            Claim::Running { .. }
        ));
    }

    #[tokio::test]
    async fn an_abandoned_claim_is_taken_over_after_its_lease_only_by_the_same_request() {
        let (_dir, db) = db().await;
        claim(&db, 1, "k", "fp", T0).await.unwrap();
        let within = Millis(T0.0 + LEASE_MS);
        assert!(matches!(
            claim(&db, 1, "k", "fp", within).await.unwrap(),
            Claim::Running { .. }
        ));
        let after = Millis(T0.0 + LEASE_MS + 1);
        assert!(matches!(
            claim(&db, 1, "k", "different", after).await.unwrap(),
            Claim::Running { .. }
        ));
        assert_eq!(
            claim(&db, 1, "k", "fp", after).await.unwrap(),
            Claim::Acquired { claimed_at: after }
        );
        // The abandoned request can no longer store its answer; the new one can.
        assert!(!complete(&db, 1, "k", T0, &answer(201, b"old")).await.unwrap());
        assert!(complete(&db, 1, "k", after, &answer(201, b"new")).await.unwrap());
    }

    #[tokio::test]
    async fn answers_expire_after_a_day() {
        let (_dir, db) = db().await;
        claim(&db, 1, "k", "fp", T0).await.unwrap();
        complete(&db, 1, "k", T0, &answer(204, b"")).await.unwrap();
        let within = Millis(T0.0 + EXPIRY_MS);
        assert!(matches!(
            claim(&db, 1, "k", "fp", within).await.unwrap(),
            Claim::Done { .. }
        ));
        let after = Millis(T0.0 + EXPIRY_MS + 1);
        assert_eq!(
            claim(&db, 1, "k", "changed", after).await.unwrap(),
            Claim::Acquired { claimed_at: after }
        );
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[tokio::test]
    async fn expire_removes_only_expired_rows() {
        let (_dir, db) = db().await;
        claim(&db, 1, "old", "fp", T0).await.unwrap();
        complete(&db, 1, "old", T0, &answer(201, b"{}")).await.unwrap();
        claim(&db, 1, "old-pending", "fp", T0).await.unwrap();
        let later = Millis(T0.0 + 60_000);
        claim(&db, 1, "new", "fp", later).await.unwrap();
        assert_eq!(expire(&db, Millis(T0.0 + EXPIRY_MS)).await.unwrap(), 0);
        assert_eq!(expire(&db, Millis(T0.0 + EXPIRY_MS + 1)).await.unwrap(), 2);
        let left: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM idempotency_keys")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(left, ["new"]);
    }

    #[tokio::test]
    async fn an_empty_body_and_no_content_type_round_trip() {
        let (_dir, db) = db().await;
        claim(&db, 1, "k", "fp", T0).await.unwrap();
        let empty = Stored {
            status: 204,
            content_type: None,
            body: Vec::new(),
        };
        complete(&db, 1, "k", T0, &empty).await.unwrap();
        assert_eq!(
            claim(&db, 1, "k", "fp", T0).await.unwrap(),
            Claim::Done {
                fingerprint: "fp".into(),
                answer: empty
            }
        );
    }
}
