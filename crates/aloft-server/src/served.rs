//! The state a device check is answered from: per app, its channels and the head update of
//! every (branch, platform, runtime version), with response bodies prepared once. A check does no
//! I/O, signing, hashing or serialisation; it looks up two maps and clones `Bytes`.

use std::collections::HashMap;
use std::sync::Arc;

use aloft_core::multipart::{self, Part};
use aloft_core::{AppSlug, Platform};
use aloft_store::Database;
use aloft_store::DbError;
use aloft_store::db::{apps, channels, updates};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use uuid::Uuid;

/// One servable update with its prepared bodies.
#[derive(Debug)]
pub struct ServedUpdate {
    pub id: Uuid,
    /// The exact manifest bytes (signed, if signed).
    pub manifest: Bytes,
    /// `expo-signature` value and the key id it was made with.
    pub signature: Option<(HeaderValue, String)>,
    /// The full `multipart/mixed` body with the `manifest` part (signature header included).
    pub multipart: Bytes,
    pub multipart_content_type: HeaderValue,
}

impl ServedUpdate {
    pub fn prepare(head: updates::Head) -> Self {
        let signature = head.signature.as_ref().map(|s| s.header_value());
        let part = Part {
            name: "manifest",
            content_type: "application/json; charset=utf-8",
            signature: signature.as_deref(),
            body: &head.manifest,
        };
        let boundary = multipart::boundary_for(std::slice::from_ref(&part));
        let body = multipart::encode(&boundary, &[part]);
        Self {
            id: head.id,
            multipart: Bytes::from(body),
            multipart_content_type: HeaderValue::from_str(&multipart::content_type(&boundary))
                .unwrap_or(HeaderValue::from_static("multipart/mixed")),
            signature: head.signature.and_then(|s| {
                let value = HeaderValue::from_str(&s.header_value()).ok()?;
                Some((value, s.keyid))
            }),
            manifest: Bytes::from(head.manifest),
        }
    }
}

type Heads = HashMap<Platform, HashMap<String, Arc<ServedUpdate>>>;

/// One app as devices see it.
#[derive(Debug)]
pub struct ServedApp {
    pub id: i64,
    pub slug: AppSlug,
    pub default_channel: String,
    /// Channel name → branch id.
    pub channels: HashMap<String, i64>,
    /// Branch id → platform → runtime version → head update.
    pub heads: HashMap<i64, Heads>,
}

impl ServedApp {
    pub async fn load(db: &Database, app_id: i64) -> Result<Self, DbError> {
        let app = apps::by_id(db, app_id).await?;
        let channels = channels::list(db, app_id)
            .await?
            .into_iter()
            .map(|c| (c.name, c.branch_id))
            .collect();
        let mut heads: HashMap<i64, Heads> = HashMap::new();
        for head in updates::heads(db, app_id).await? {
            heads
                .entry(head.branch_id)
                .or_default()
                .entry(head.platform)
                .or_default()
                .insert(
                    head.runtime_version.to_string(),
                    Arc::new(ServedUpdate::prepare(head)),
                );
        }
        Ok(Self {
            id: app.id,
            slug: app.slug,
            default_channel: app.default_channel.to_string(),
            channels,
            heads,
        })
    }

    /// The branch a channel points at, if the channel exists.
    pub fn branch_of(&self, channel: &str) -> Option<i64> {
        self.channels.get(channel).copied()
    }

    pub fn head(
        &self,
        branch_id: i64,
        platform: Platform,
        runtime_version: &str,
    ) -> Option<&Arc<ServedUpdate>> {
        self.heads
            .get(&branch_id)?
            .get(&platform)?
            .get(runtime_version)
    }
}

/// All apps, swapped whole when one changes, so readers never wait and never see half a state.
#[derive(Default)]
pub struct Served {
    apps: ArcSwap<HashMap<String, Arc<ServedApp>>>,
}

impl Served {
    pub async fn load(db: &Database) -> Result<Self, DbError> {
        let mut map = HashMap::new();
        for app in apps::list(db).await? {
            map.insert(
                app.slug.to_string(),
                Arc::new(ServedApp::load(db, app.id).await?),
            );
        }
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
