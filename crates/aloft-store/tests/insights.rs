//! Insight rows on the backend under test (`ALOFT_TEST_BACKEND`): each process's counts are kept
//! apart and rewritten in place, counters add up across stores and processes, and reads merge.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use aloft_core::Platform;
use aloft_store::db::insights::{self, Batch, DeviceKey, EMBEDDED, Event, FatalKey, FleetKey};
use aloft_store::testing::Backend;
use uuid::Uuid;

fn device_key(update_id: Uuid, day: i64, event: Event) -> DeviceKey {
    DeviceKey {
        app_id: 1,
        update_id,
        platform: Platform::Ios,
        day,
        event,
    }
}

#[tokio::test]
async fn counts_are_kept_per_process_and_counters_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Backend::from_env().fresh(dir.path()).open().await;
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    let fatal = FatalKey {
        app_id: 1,
        update_id: u1,
        platform: Platform::Ios,
        day: 20_000,
        message_hash: "ab".repeat(32),
    };
    let first = Batch {
        devices: vec![
            (device_key(u1, 20_000, Event::Launched), vec![1, 0, 1]),
            (device_key(u2, 20_000, Event::Served), vec![1, 0, 2]),
        ],
        fleet: vec![(
            FleetKey {
                app_id: 1,
                channel: "production".into(),
                platform: Platform::Ios,
                runtime_version: "1.0.0".into(),
                running: EMBEDDED.into(),
                day: 20_000,
            },
            vec![1, 0, 3],
        )],
        fatal_errors: vec![(fatal.clone(), "TypeError: undefined is not a function".into(), 2)],
        unknown_channels: vec![(1, "staging".into(), 20_000, 3)],
    };
    insights::store(&db, "replica-a", &first).await.unwrap();
    // The same process stores its grown count: the row is replaced, counters add.
    let second = Batch {
        devices: vec![(device_key(u1, 20_000, Event::Launched), vec![1, 0, 9])],
        fatal_errors: vec![(fatal, "TypeError: undefined is not a function".into(), 5)],
        unknown_channels: vec![(1, "staging".into(), 20_000, 1), (1, "beta".into(), 20_001, 7)],
        ..Batch::default()
    };
    insights::store(&db, "replica-a", &second).await.unwrap();
    // Another process: its own row.
    let other = Batch {
        devices: vec![(device_key(u1, 20_001, Event::Launched), vec![1, 0, 4])],
        ..Batch::default()
    };
    insights::store(&db, "replica-b", &other).await.unwrap();

    let rows = insights::devices(&db, &[u1], 0).await.unwrap();
    let got: Vec<(i64, Event, Vec<u8>)> = rows.iter().map(|r| (r.day, r.event, r.devices.clone())).collect();
    assert_eq!(
        got,
        vec![
            (20_000, Event::Launched, vec![1, 0, 9]),
            (20_001, Event::Launched, vec![1, 0, 4])
        ]
    );
    assert_eq!(insights::devices(&db, &[u1], 20_001).await.unwrap().len(), 1);
    assert_eq!(insights::devices(&db, &[u2], 0).await.unwrap()[0].event, Event::Served);

    let errors = insights::fatal_errors(&db, &[u1, u2], 0, 10).await.unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].reports, errors[0].platform.as_str()), (7, "ios"));

    let fleet = insights::fleet(&db, 1, Some("production"), 20_000).await.unwrap();
    assert_eq!(fleet.len(), 1);
    assert_eq!(
        (fleet[0].running.as_str(), fleet[0].devices.clone()),
        (EMBEDDED, vec![1, 0, 3])
    );
    assert!(insights::fleet(&db, 1, Some("beta"), 20_000).await.unwrap().is_empty());
    assert_eq!(insights::fleet(&db, 1, None, 20_000).await.unwrap().len(), 1);

    assert_eq!(
        insights::unknown_channels(&db, 1, 0).await.unwrap(),
        vec![("beta".to_owned(), 7), ("staging".to_owned(), 4)]
    );
    assert_eq!(
        insights::unknown_channels(&db, 1, 20_001).await.unwrap(),
        vec![("beta".to_owned(), 7)]
    );
}
