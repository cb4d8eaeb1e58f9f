//! Webhook rows on the backend under test (`ALOFT_TEST_BACKEND`): a webhook gets only the audit
//! entries after it, one audit entry makes one delivery however often (and by however many
//! replicas) it is enqueued, a lease lets one sender at a time hold a delivery, and removing a
//! webhook removes its log.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use aloft_core::AppSlug;
use aloft_core::time::Millis;
use aloft_store::db::webhooks::{self, Attempt, NewDelivery, Next};
use aloft_store::db::{apps, audit};
use aloft_store::testing::Backend;
use aloft_store::{Database, DbError};
use serde_json::json;
use uuid::Uuid;

async fn record(db: &Database, action: &str) {
    let mut tx = db.begin_write().await.unwrap();
    let entry = audit::Entry {
        at: Millis::now(),
        actor: "test".into(),
        app: Some("demo".into()),
        action: action.into(),
        target: "production".into(),
        details: json!({"summary": action}),
        remote: String::new(),
    };
    audit::record(&mut tx, &entry).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn each_audit_entry_makes_one_delivery_held_by_one_sender_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Backend::from_env().fresh(dir.path()).open().await;
    let app = apps::create(&db, &AppSlug::parse("demo").unwrap()).await.unwrap();
    record(&db, "publish").await;

    let mut tx = db.begin_write().await.unwrap();
    let hook = webhooks::insert(&mut tx, app.id, "http://127.0.0.1:9/h", &["publish".into()], "k")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Entries before the webhook are not its.
    assert!(
        audit::after(&db, "demo", hook.audit_cursor, 10)
            .await
            .unwrap()
            .is_empty()
    );
    record(&db, "publish").await;
    record(&db, "channel.create").await;
    let new = audit::after(&db, "demo", hook.audit_cursor, 10).await.unwrap();
    let actions: Vec<&str> = new.iter().map(|(_, e)| e.action.as_str()).collect();
    assert_eq!(actions, ["publish", "channel.create"]);
    assert!(new[0].0 < new[1].0);

    // Two replicas enqueue the same entry: one row, the first one's id.
    let first = NewDelivery {
        id: Uuid::new_v4(),
        webhook_id: hook.id,
        audit_id: new[0].0,
        event: "publish".into(),
        body: "{}".into(),
        occurred_at: new[0].1.at,
    };
    let second = NewDelivery {
        id: Uuid::new_v4(),
        ..first.clone()
    };
    assert!(webhooks::enqueue(&db, &first).await.unwrap());
    assert!(!webhooks::enqueue(&db, &second).await.unwrap());
    webhooks::advance(&db, hook.id, new[1].0).await.unwrap();
    webhooks::advance(&db, hook.id, new[0].0).await.unwrap();
    let (stored, slug) = webhooks::all(&db).await.unwrap().remove(0);
    assert_eq!(
        (stored.audit_cursor, slug.as_str()),
        (new[1].0, "demo"),
        "a cursor never moves back"
    );

    // One sender holds it; another cannot take it until the lease runs out.
    let now = Millis::now();
    let due = webhooks::due(&db, now, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].id, due[0].secret.as_str()), (first.id, "k"));
    assert!(
        webhooks::claim(&db, first.id, now, Millis(now.0 + 60_000))
            .await
            .unwrap()
    );
    assert!(
        !webhooks::claim(&db, first.id, now, Millis(now.0 + 60_000))
            .await
            .unwrap()
    );
    assert!(webhooks::due(&db, now, 10).await.unwrap().is_empty());
    let later = Millis(now.0 + 61_000);
    assert_eq!(
        webhooks::due(&db, later, 10).await.unwrap().len(),
        1,
        "an expired lease frees it"
    );

    // A failed attempt, then a delivered one.
    let attempt = |status| Attempt {
        at: Millis::now(),
        status: Some(status),
        error: (status != 200).then(|| format!("the receiver answered {status}")),
        duration_ms: 3,
    };
    let retry = Millis(now.0 + 10_000);
    webhooks::record(&db, first.id, 1, &attempt(500), Next::RetryAt(retry))
        .await
        .unwrap();
    assert!(
        webhooks::due(&db, now, 10).await.unwrap().is_empty(),
        "not due before its retry"
    );
    assert_eq!(webhooks::due(&db, retry, 10).await.unwrap()[0].attempts, 1);
    webhooks::record(&db, first.id, 2, &attempt(200), Next::Delivered)
        .await
        .unwrap();
    let log = webhooks::deliveries(&db, app.id, Some(hook.id), 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].state, "delivered");
    let statuses: Vec<Option<u16>> = log[0].attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(200)]);
    assert!(
        webhooks::due(&db, Millis(now.0 + 3_600_000), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Removing it removes its log; a second removal finds nothing.
    let mut tx = db.begin_write().await.unwrap();
    webhooks::delete(&mut tx, app.id, hook.id).await.unwrap();
    tx.commit().await.unwrap();
    assert!(webhooks::deliveries(&db, app.id, None, 10).await.unwrap().is_empty());
    let mut tx = db.begin_write().await.unwrap();
    assert!(matches!(
        webhooks::delete(&mut tx, app.id, hook.id).await,
        Err(DbError::NoSuchWebhook)
    ));
}
