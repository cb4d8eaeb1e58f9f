//! The state a device check is answered from: per app, its channels (with any branch rollout)
//! and the head of every (branch, platform, runtime version) with its rollout control, response
//! bodies prepared once. A check does no I/O, signing or serialisation: it looks up maps, hashes
//! the device id when a rollout applies, and clones `Bytes`.

use std::collections::HashMap;
use std::sync::Arc;

use aloft_core::multipart::{self, Part};
use aloft_core::{AppSlug, Platform, rollout};
use aloft_store::Database;
use aloft_store::DbError;
use aloft_store::db::updates::{self, BodyKind};
use aloft_store::db::{apps, channels};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use uuid::Uuid;

/// One servable update (a manifest, or a `rollBackToEmbedded` directive) with prepared bodies.
#[derive(Debug)]
pub struct ServedUpdate {
    pub id: Uuid,
    pub kind: BodyKind,
    /// The exact body bytes (signed, if signed).
    pub body: Bytes,
    /// `expo-signature` value and the key id it was made with.
    pub signature: Option<(HeaderValue, String)>,
    /// The full `multipart/mixed` body: a `manifest` or `directive` part, signature included.
    pub multipart: Bytes,
    pub multipart_content_type: HeaderValue,
}

impl ServedUpdate {
    pub fn prepare(update: updates::StoredUpdate, kind: BodyKind) -> Self {
        let signature = update.signature.as_ref().map(|s| s.header_value());
        let part = Part {
            name: match kind {
                BodyKind::Manifest => "manifest",
                BodyKind::Directive => "directive",
            },
            content_type: "application/json; charset=utf-8",
            signature: signature.as_deref(),
            body: &update.body,
        };
        let boundary = multipart::boundary_for(std::slice::from_ref(&part));
        let body = multipart::encode(&boundary, &[part]);
        Self {
            id: update.id,
            kind,
            multipart: Bytes::from(body),
            multipart_content_type: HeaderValue::from_str(&multipart::content_type(&boundary))
                .unwrap_or(HeaderValue::from_static("multipart/mixed")),
            signature: update.signature.and_then(|s| {
                let value = HeaderValue::from_str(&s.header_value()).ok()?;
                Some((value, s.keyid))
            }),
            body: Bytes::from(update.body),
        }
    }
}

/// The newest served update of a (branch, platform, runtime version). When its group is being
/// rolled out, devices outside the rollout get `control` (or nothing newer, when it is `None`).
#[derive(Debug)]
pub struct Head {
    pub update: Arc<ServedUpdate>,
    pub rollout: Option<HeadRollout>,
}

#[derive(Debug)]
pub struct HeadRollout {
    pub percentage: u8,
    pub salt: String,
    pub control: Option<Arc<ServedUpdate>>,
}

impl Head {
    /// The update this device gets.
    pub fn for_device(&self, client_id: Option<&str>) -> Option<&Arc<ServedUpdate>> {
        match &self.rollout {
            None => Some(&self.update),
            Some(r) if rollout::is_in(&r.salt, client_id, r.percentage) => Some(&self.update),
            Some(r) => r.control.as_ref(),
        }
    }
}

/// Where a channel sends devices.
#[derive(Debug, Clone)]
pub struct Route {
    pub branch: i64,
    /// A branch rollout: this share of devices goes to the other branch.
    pub rollout: Option<(i64, u8, String)>,
}

impl Route {
    pub fn branch_for(&self, client_id: Option<&str>) -> i64 {
        match &self.rollout {
            Some((branch, pct, salt)) if rollout::is_in(salt, client_id, *pct) => *branch,
            _ => self.branch,
        }
    }
}

type Heads = HashMap<Platform, HashMap<String, Head>>;

/// One app as devices see it.
#[derive(Debug)]
pub struct ServedApp {
    pub id: i64,
    pub slug: AppSlug,
    /// The app's revision this state was loaded at.
    pub revision: i64,
    pub default_channel: String,
    pub channels: HashMap<String, Route>,
    /// Branch id → platform → runtime version → head.
    pub heads: HashMap<i64, Heads>,
}

impl ServedApp {
    pub async fn load(db: &Database, app_id: i64) -> Result<Self, DbError> {
        let app = apps::by_id(db, app_id).await?;
        let channels = channels::list(db, app_id)
            .await?
            .into_iter()
            .map(|c| {
                let rollout = c.rollout.map(|r| (r.branch_id, r.percentage, r.salt));
                (
                    c.name,
                    Route {
                        branch: c.branch_id,
                        rollout,
                    },
                )
            })
            .collect();
        let mut rows = updates::heads(db, app_id).await?;
        // Newest first within each key, so the head is seen before its control.
        rows.sort_by_key(|h| h.rank);
        let mut heads: HashMap<i64, Heads> = HashMap::new();
        for row in rows {
            let slot = heads
                .entry(row.branch_id)
                .or_default()
                .entry(row.update.platform)
                .or_default();
            let rv = row.update.runtime_version.to_string();
            match slot.get_mut(&rv) {
                None => {
                    let rollout = row.rollout.map(|r| HeadRollout {
                        percentage: r.percentage,
                        salt: r.salt,
                        control: None,
                    });
                    let update = Arc::new(ServedUpdate::prepare(row.update, row.kind));
                    slot.insert(rv, Head { update, rollout });
                }
                Some(head) => {
                    if let Some(rollout) = &mut head.rollout {
                        rollout.control = Some(Arc::new(ServedUpdate::prepare(row.update, row.kind)));
                    }
                }
            }
        }
        Ok(Self {
            id: app.id,
            slug: app.slug,
            revision: app.revision,
            default_channel: app.default_channel.to_string(),
            channels,
            heads,
        })
    }

    pub fn route(&self, channel: &str) -> Option<&Route> {
        self.channels.get(channel)
    }

    pub fn head(&self, branch_id: i64, platform: Platform, runtime_version: &str) -> Option<&Head> {
        self.heads.get(&branch_id)?.get(&platform)?.get(runtime_version)
    }
}

/// All apps, swapped whole when one changes, so readers never wait and never see half a state.
#[derive(Default)]
pub struct Served {
    apps: ArcSwap<HashMap<String, Arc<ServedApp>>>,
}

impl Served {
    pub async fn load(db: &Database) -> Result<Self, DbError> {
        use futures::{StreamExt, TryStreamExt};
        // A few apps at a time: each load is a handful of queries, and the pool runs them on
        // as many connections (SQLite connections each have their own thread).
        let map = futures::stream::iter(apps::list(db).await?)
            .map(|app| async move {
                let loaded = ServedApp::load(db, app.id).await?;
                Ok::<_, DbError>((app.slug.to_string(), Arc::new(loaded)))
            })
            .buffer_unordered(4)
            .try_collect::<HashMap<_, _>>()
            .await?;
        Ok(Self {
            apps: ArcSwap::from_pointee(map),
        })
    }

    pub fn app(&self, slug: &str) -> Option<Arc<ServedApp>> {
        self.apps.load().get(slug).cloned()
    }

    /// Re-reads one app after a committed change and publishes the new state atomically.
    pub async fn refresh(&self, db: &Database, app_id: i64) -> Result<(), DbError> {
        let app = Arc::new(ServedApp::load(db, app_id).await?);
        self.apps.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(app.slug.to_string(), app.clone());
            next
        });
        Ok(())
    }
}
