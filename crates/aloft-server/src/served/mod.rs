//! The state a device check is answered from: per app, its channels (with any branch rollout)
//! and the head of every (branch, platform, runtime version) with its rollout control, response
//! bodies prepared once. A check does no I/O, signing or serialisation: it looks up maps, hashes
//! the device id when a rollout applies, and clones `Bytes`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aloft_core::fasthash::FastBuild;
use aloft_core::multipart::{self, Part};
use aloft_core::time::Millis;
use aloft_core::{AppSlug, ContentHash, Platform, rollout};
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
pub(crate) struct ServedUpdate {
    pub id: Uuid,
    pub group_id: Uuid,
    pub kind: BodyKind,
    pub platform: Platform,
    pub created_at: Millis,
    /// The hash of the launch asset (the bundle) a manifest names; `None` for a directive.
    pub launch_asset: Option<ContentHash>,
    /// The exact body bytes (signed, if signed).
    pub body: Bytes,
    /// `expo-signature` value and the key id it was made with.
    pub signature: Option<(HeaderValue, String)>,
    /// The full `multipart/mixed` body: a `manifest` or `directive` part, signature included.
    pub multipart: Bytes,
    pub multipart_content_type: HeaderValue,
}

impl ServedUpdate {
    pub(crate) fn prepare(update: updates::StoredUpdate, group_id: Uuid, kind: BodyKind, created_at: Millis) -> Self {
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
        let launch_asset = match kind {
            BodyKind::Manifest => aloft_core::manifest::launch_asset_hash(&update.body),
            BodyKind::Directive => None,
        };
        Self {
            id: update.id,
            group_id,
            kind,
            platform: update.platform,
            created_at,
            launch_asset,
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
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub update: Arc<ServedUpdate>,
    pub rollout: Option<HeadRollout>,
    /// The served updates before `update`, newest first (the control among them): where a
    /// device that reported the newer ones failed falls back to.
    pub earlier: Arc<[Arc<ServedUpdate>]>,
}

#[derive(Debug, Clone)]
pub(crate) struct HeadRollout {
    pub percentage: u8,
    pub salt: String,
    pub control: Option<Arc<ServedUpdate>>,
}

impl Head {
    /// The update this device gets.
    pub(crate) fn for_device(&self, client_id: Option<&str>) -> Option<&Arc<ServedUpdate>> {
        match &self.rollout {
            None => Some(&self.update),
            Some(r) if rollout::is_in(&r.salt, client_id, r.percentage) => Some(&self.update),
            Some(r) => r.control.as_ref(),
        }
    }

    /// What a device that reported the updates in `failed` gets instead of `natural` (what
    /// [`Head::for_device`] gave it): `natural` unless it failed there, else the newest earlier
    /// manifest it did not report, if that is newer than what it runs (`running_since`, the
    /// `createdAt` of its current update when known). A device is never offered an update it
    /// reported failed.
    pub(crate) fn avoiding_failed<'h>(
        &'h self,
        natural: Option<&'h Arc<ServedUpdate>>,
        failed: &[Uuid],
        running_since: Option<Millis>,
    ) -> Option<&'h Arc<ServedUpdate>> {
        let natural = natural?;
        if !failed.contains(&natural.id) {
            return Some(natural);
        }
        let candidate = self
            .earlier
            .iter()
            .find(|u| u.created_at < natural.created_at && u.kind == BodyKind::Manifest && !failed.contains(&u.id))?;
        match running_since {
            Some(since) if candidate.created_at <= since => None,
            _ => Some(candidate),
        }
    }
}

/// Where a channel sends devices.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub branch: i64,
    /// A branch rollout: this share of devices goes to the other branch.
    pub rollout: Option<(i64, u8, String)>,
}

impl Route {
    /// Whether this device is on the rollout side of the channel's branch rollout.
    pub(crate) fn in_rollout(&self, client_id: Option<&str>) -> bool {
        matches!(&self.rollout, Some((_, pct, salt)) if rollout::is_in(salt, client_id, *pct))
    }

    pub(crate) fn branch_for(&self, client_id: Option<&str>) -> i64 {
        match &self.rollout {
            Some((branch, _, _)) if self.in_rollout(client_id) => *branch,
            _ => self.branch,
        }
    }
}

type Heads = HashMap<Platform, HashMap<String, Head>>;

/// One app as devices see it.
#[derive(Debug)]
pub(crate) struct ServedApp {
    pub id: i64,
    pub slug: AppSlug,
    /// The app's revision this state was loaded at.
    pub revision: i64,
    pub default_channel: Arc<str>,
    /// Whether devices that ask get bundle patches.
    pub patches: bool,
    pub channels: HashMap<String, Route>,
    /// Branch id → platform → runtime version → head.
    pub heads: HashMap<i64, Heads>,
}

impl ServedApp {
    pub(crate) async fn load(db: &Database, app_id: i64) -> Result<Self, DbError> {
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
            let update = Arc::new(ServedUpdate::prepare(
                row.update,
                row.group_id,
                row.kind,
                row.created_at,
            ));
            match slot.get_mut(&rv) {
                None => {
                    let rollout = row.rollout.map(|r| HeadRollout {
                        percentage: r.percentage,
                        salt: r.salt,
                        control: None,
                    });
                    slot.insert(
                        rv,
                        Head {
                            update,
                            rollout,
                            earlier: Arc::new([]),
                        },
                    );
                }
                Some(head) => {
                    if let Some(rollout) = &mut head.rollout
                        && row.rank == 2
                    {
                        rollout.control = Some(update.clone());
                    }
                    let mut earlier = head.earlier.to_vec();
                    earlier.push(update);
                    head.earlier = earlier.into();
                }
            }
        }
        Ok(Self {
            id: app.id,
            slug: app.slug,
            revision: app.revision,
            default_channel: Arc::from(app.default_channel.as_str()),
            patches: app.patches,
            channels,
            heads,
        })
    }

    pub(crate) fn route(&self, channel: &str) -> Option<&Route> {
        self.channels.get(channel)
    }

    pub(crate) fn head(&self, branch_id: i64, platform: Platform, runtime_version: &str) -> Option<&Head> {
        self.heads.get(&branch_id)?.get(&platform)?.get(runtime_version)
    }

    /// The update a device on `route` gets, from the per-app maps: what the index resolves in
    /// advance (the tests hold the two against each other).
    #[cfg(test)]
    pub(crate) fn update_for(
        &self,
        route: &Route,
        platform: Platform,
        runtime_version: &str,
        client_id: Option<&str>,
    ) -> Option<&Arc<ServedUpdate>> {
        self.head_for(route, platform, runtime_version, client_id)
            .and_then(|head| head.for_device(client_id))
    }

    /// The head whose update a device on `route` gets.
    pub(crate) fn head_for(
        &self,
        route: &Route,
        platform: Platform,
        runtime_version: &str,
        client_id: Option<&str>,
    ) -> Option<&Head> {
        self.head(route.branch_for(client_id), platform, runtime_version)
    }
}

/// What one (app, channel, platform, runtime version) serves, resolved in advance: the
/// channel's branch (or the two sides of its branch rollout) and that branch's head.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub app_id: i64,
    /// The app's default channel: what a check that names none is recorded under.
    pub default_channel: Arc<str>,
    /// The channel's route: devices in its branch rollout are served `rolled`, the rest `main`.
    route: Route,
    main: Option<Head>,
    rolled: Option<Head>,
}

impl Resolved {
    /// The update this device gets, as `ServedApp::update_for` decides.
    #[cfg(test)]
    pub(crate) fn for_device(&self, client_id: Option<&str>) -> Option<&Arc<ServedUpdate>> {
        self.head_for(client_id)?.for_device(client_id)
    }

    /// The head whose update this device gets, as [`ServedApp::head_for`] decides.
    pub(crate) fn head_for(&self, client_id: Option<&str>) -> Option<&Head> {
        if self.route.in_rollout(client_id) {
            self.rolled.as_ref()
        } else {
            self.main.as_ref()
        }
    }
}

/// One consistent view of every app, and an index of every key a device can ask for.
///
/// The index exists for memory locality: a check with a known key reads one small map whose
/// entries were built together, instead of walking app, channel, branch, platform and runtime
/// version maps scattered across the heap between manifest bodies (with hundreds of apps, those
/// cache and TLB misses cost a third of the check).
#[derive(Default)]
pub(crate) struct Snapshot {
    apps: HashMap<String, Arc<ServedApp>>,
    /// Every update in memory by id (heads and what came before them), with its app's id: what
    /// device reports about the updates they run are checked against.
    updates: HashMap<Uuid, (i64, Arc<ServedUpdate>), FastBuild>,
    /// `slug \n channel \n platform \n runtime version`; the channel is empty for requests
    /// that name none (the app's default channel).
    index: HashMap<Box<str>, Resolved>,
    /// The launch assets of every update in memory: their answers vary with the patch headers.
    launch_assets: HashSet<ContentHash>,
    /// The apps whose devices get bundle patches.
    patches_on: HashSet<i64>,
}

/// Longest index key looked up without allocating; longer keys are not indexed-looked-up
/// (names are far shorter: slugs 64, channels 128, runtime versions 256 bytes at most).
const KEY_BUFFER: usize = 512;

impl Snapshot {
    fn new(apps: HashMap<String, Arc<ServedApp>>) -> Self {
        let mut index = HashMap::new();
        let mut updates = HashMap::default();
        let mut launch_assets = HashSet::default();
        let mut patches_on = HashSet::default();
        for app in apps.values() {
            app.index_into(&mut index);
            if app.patches {
                patches_on.insert(app.id);
            }
            for head in app.heads.values().flat_map(HashMap::values).flat_map(HashMap::values) {
                for update in std::iter::once(&head.update).chain(head.earlier.iter()) {
                    updates.insert(update.id, (app.id, update.clone()));
                    launch_assets.extend(update.launch_asset);
                }
            }
        }
        Self {
            apps,
            index,
            updates,
            launch_assets,
            patches_on,
        }
    }

    /// The slug of an app by its id.
    pub(crate) fn slug_of(&self, app_id: i64) -> Option<&str> {
        self.apps.values().find(|a| a.id == app_id).map(|a| a.slug.as_str())
    }

    /// An update in memory, with its app's id.
    pub(crate) fn update(&self, id: &Uuid) -> Option<(i64, &Arc<ServedUpdate>)> {
        self.updates.get(id).map(|(app, update)| (*app, update))
    }

    pub(crate) fn app(&self, slug: &str) -> Option<&Arc<ServedApp>> {
        self.apps.get(slug)
    }

    /// Whether `hash` is the launch asset of an update in memory.
    pub(crate) fn is_launch_asset(&self, hash: &ContentHash) -> bool {
        self.launch_assets.contains(hash)
    }

    /// Whether the app's devices get bundle patches.
    pub(crate) fn patches_on(&self, app_id: i64) -> bool {
        self.patches_on.contains(&app_id)
    }

    /// The resolved entry for a check, or `None` when the key is not indexed: an unknown app or
    /// channel, or nothing published for this platform and runtime version.
    pub(crate) fn resolve(
        &self,
        slug: &str,
        channel: Option<&str>,
        platform: Platform,
        runtime_version: &str,
    ) -> Option<&Resolved> {
        let mut buffer = [0u8; KEY_BUFFER];
        let key = index_key(&mut buffer, slug, channel.unwrap_or(""), platform, runtime_version)?;
        self.index.get(key)
    }
}

/// The index key `slug \n channel \n platform \n runtime version`, written into `buffer`;
/// `None` when it does not fit.
fn index_key<'b>(
    buffer: &'b mut [u8; KEY_BUFFER],
    slug: &str,
    channel: &str,
    platform: Platform,
    runtime_version: &str,
) -> Option<&'b str> {
    let mut len = 0;
    for (i, part) in [slug, channel, platform.as_str(), runtime_version]
        .into_iter()
        .enumerate()
    {
        let sep = usize::from(i > 0);
        let end = len + sep + part.len();
        if end > KEY_BUFFER {
            return None;
        }
        if sep == 1 {
            buffer[len] = b'\n';
        }
        buffer[len + sep..end].copy_from_slice(part.as_bytes());
        len = end;
    }
    std::str::from_utf8(&buffer[..len]).ok()
}

impl ServedApp {
    /// Adds an entry for every (channel, platform, runtime version) this app can answer with
    /// an update; requests for its default channel without a channel name get the same entries
    /// under the empty channel.
    fn index_into(&self, index: &mut HashMap<Box<str>, Resolved>) {
        let mut channels: Vec<(&str, &Route)> = self.channels.iter().map(|(n, r)| (n.as_str(), r)).collect();
        if let Some(route) = self.channels.get(&*self.default_channel) {
            channels.push(("", route));
        }
        let slug = self.slug.as_str();
        for (channel, route) in channels {
            let rolled_branch = route.rollout.as_ref().map(|(branch, _, _)| *branch);
            let mut keys: Vec<(Platform, &str)> = Vec::new();
            for branch in std::iter::once(route.branch).chain(rolled_branch) {
                for (platform, by_rv) in self.heads.get(&branch).into_iter().flatten() {
                    keys.extend(by_rv.keys().map(|rv| (*platform, rv.as_str())));
                }
            }
            keys.sort_unstable();
            keys.dedup();
            for (platform, rv) in keys {
                // A key too long for the lookup buffer is left out; checks for it take the
                // per-app maps instead (`update_for`).
                let mut buffer = [0u8; KEY_BUFFER];
                let Some(key) = index_key(&mut buffer, slug, channel, platform, rv) else {
                    continue;
                };
                let resolved = Resolved {
                    app_id: self.id,
                    default_channel: self.default_channel.clone(),
                    route: route.clone(),
                    main: self.head(route.branch, platform, rv).cloned(),
                    rolled: rolled_branch.and_then(|b| self.head(b, platform, rv).cloned()),
                };
                index.insert(key.into(), resolved);
            }
        }
    }
}

/// All apps, swapped whole when one changes, so readers never wait and never see half a state.
#[derive(Default)]
pub(crate) struct Served {
    current: ArcSwap<Snapshot>,
}

impl Served {
    pub(crate) async fn load(db: &Database) -> Result<Self, DbError> {
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
            current: ArcSwap::from_pointee(Snapshot::new(map)),
        })
    }

    /// The current state, for answering one request.
    pub(crate) fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub(crate) fn app(&self, slug: &str) -> Option<Arc<ServedApp>> {
        self.current.load().app(slug).cloned()
    }

    /// Re-reads one app after a committed change and publishes the new state atomically.
    pub(crate) async fn refresh(&self, db: &Database, app_id: i64) -> Result<(), DbError> {
        let app = Arc::new(ServedApp::load(db, app_id).await?);
        self.current.rcu(|current| {
            let mut next = HashMap::clone(&current.apps);
            next.insert(app.slug.to_string(), app.clone());
            Snapshot::new(next)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
