//! The served state's decisions against their references: the index against the per-app maps,
//! and what a device that reported failures is offered.

use super::*;
use aloft_core::RuntimeVersion;

fn update(n: u128) -> Arc<ServedUpdate> {
    Arc::new(ServedUpdate::prepare(
        updates::StoredUpdate {
            id: Uuid::from_u128(n),
            origin: Uuid::from_u128(n),
            platform: Platform::Ios,
            runtime_version: RuntimeVersion::parse("1").unwrap(),
            body: format!("{{\"n\":{n}}}").into_bytes(),
            signature: None,
        },
        Uuid::from_u128(n),
        BodyKind::Manifest,
        Millis(i64::try_from(n).unwrap()),
    ))
}

fn head(n: u128, rollout: Option<(u8, &str, Option<u128>)>) -> Head {
    Head {
        update: update(n),
        rollout: rollout.map(|(percentage, salt, control)| HeadRollout {
            percentage,
            salt: salt.to_owned(),
            control: control.map(update),
        }),
        earlier: Arc::new([]),
    }
}

/// An app with a plain channel, a channel in a branch rollout, a group rollout with and
/// without a control, two runtime versions and a platform missing on one branch.
fn app() -> ServedApp {
    let mut heads: HashMap<i64, Heads> = HashMap::new();
    let b1 = heads.entry(1).or_default();
    b1.entry(Platform::Ios)
        .or_default()
        .insert("1.0".into(), head(11, None));
    b1.entry(Platform::Ios)
        .or_default()
        .insert("2.0".into(), head(12, Some((30, "g1", Some(13)))));
    b1.entry(Platform::Android)
        .or_default()
        .insert("1.0".into(), head(14, Some((50, "g2", None))));
    let b2 = heads.entry(2).or_default();
    b2.entry(Platform::Ios)
        .or_default()
        .insert("1.0".into(), head(21, None));
    b2.entry(Platform::Ios)
        .or_default()
        .insert("3.0".into(), head(22, None));
    let channels = HashMap::from([
        (
            "production".to_owned(),
            Route {
                branch: 1,
                rollout: None,
            },
        ),
        (
            "staging".to_owned(),
            Route {
                branch: 2,
                rollout: None,
            },
        ),
        (
            "beta".to_owned(),
            Route {
                branch: 1,
                rollout: Some((2, 40, "c1".to_owned())),
            },
        ),
        (
            "empty".to_owned(),
            Route {
                branch: 9,
                rollout: None,
            },
        ),
    ]);
    ServedApp {
        id: 1,
        slug: AppSlug::parse("demo").unwrap(),
        revision: 1,
        default_channel: "production".into(),
        patches: true,
        channels,
        heads,
    }
}

/// What the per-app maps decide: the reference the index must agree with.
fn slow(
    app: &ServedApp,
    channel: Option<&str>,
    platform: Platform,
    rv: &str,
    client: Option<&str>,
) -> Option<Option<Uuid>> {
    let route = app.route(channel.unwrap_or(&*app.default_channel))?;
    Some(app.update_for(route, platform, rv, client).map(|u| u.id))
}

#[test]
fn the_index_decides_as_the_per_app_maps_do() {
    let snapshot = Snapshot::new(HashMap::from([("demo".to_owned(), Arc::new(app()))]));
    let app = snapshot.app("demo").unwrap().clone();
    let clients: Vec<Option<String>> = std::iter::once(None)
        .chain((0..400).map(|i| Some(format!("{i:08X}-0000-4000-8000-000000000000"))))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for channel in [
        None,
        Some("production"),
        Some("staging"),
        Some("beta"),
        Some("empty"),
        Some("nope"),
    ] {
        for platform in [Platform::Ios, Platform::Android] {
            for rv in ["1.0", "2.0", "3.0", "4.0"] {
                for client in &clients {
                    let client = client.as_deref();
                    let expected = slow(&app, channel, platform, rv, client);
                    let got = snapshot
                        .resolve("demo", channel, platform, rv)
                        .map(|r| r.for_device(client));
                    match (expected, got) {
                        // Not indexed: the caller's slow path answers (404 or no update).
                        (None, None) | (Some(None), None) => {}
                        (Some(e), Some(g)) => {
                            assert_eq!(e, g.map(|u| u.id), "{channel:?} {platform} {rv} {client:?}")
                        }
                        (e, g) => panic!(
                            "{channel:?} {platform} {rv} {client:?}: {e:?} vs {:?}",
                            g.map(|u| u.map(|u| u.id))
                        ),
                    }
                    seen.insert(got.flatten().map(|u| u.id.as_u128()));
                }
            }
        }
    }
    // Every head, control and rollout side was reached, and no-update answers happened.
    for n in [11, 12, 13, 14, 21, 22] {
        assert!(seen.contains(&Some(n)), "update {n} never served");
    }
    assert!(seen.contains(&None));
    assert!(snapshot.resolve("other", None, Platform::Ios, "1.0").is_none());
    let long = "x".repeat(KEY_BUFFER);
    assert!(snapshot.resolve("demo", None, Platform::Ios, &long).is_none());
}

#[test]
fn a_device_is_never_offered_an_update_it_reported_failed() {
    let head = Head {
        earlier: vec![update(20), update(10)].into(),
        ..head(30, Some((50, "g", Some(20))))
    };
    let ids = |ns: &[u128]| ns.iter().map(|&n| Uuid::from_u128(n)).collect::<Vec<_>>();
    let pick = |natural: Option<&Arc<ServedUpdate>>, failed: &[u128], since: Option<i64>| {
        head.avoiding_failed(natural, &ids(failed), since.map(Millis))
            .map(|u| u.id.as_u128())
    };
    let newest = Some(&head.update);
    let control = head.earlier.first();
    assert_eq!(pick(newest, &[], None), Some(30));
    assert_eq!(pick(newest, &[99], None), Some(30));
    assert_eq!(pick(newest, &[30], None), Some(20));
    assert_eq!(pick(newest, &[30, 20], None), Some(10));
    assert_eq!(pick(newest, &[30, 20, 10], None), None);
    // Nothing older than what the device runs.
    assert_eq!(pick(newest, &[30], Some(20)), None);
    assert_eq!(pick(newest, &[30], Some(15)), Some(20));
    // Outside the rollout: the control, or what came before it.
    assert_eq!(pick(control, &[30], None), Some(20));
    assert_eq!(pick(control, &[20], None), Some(10));
    assert_eq!(pick(None, &[30], None), None);
}
