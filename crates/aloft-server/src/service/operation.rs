//! Operations that may publish (publish, republish, rollbacks, disabling, rollouts), and what
//! they share: fixing ids and `createdAt`, planning bodies, signing them (or taking the
//! publisher's signatures over them), and committing with the audit entry.
//!
//! An [`Operation`] runs in one write transaction. [`Mode::Prepare`] runs it exactly as it would
//! run and rolls the transaction back; the caller gets the bodies to sign. The commit runs the
//! operation again with the ids fixed by the prepare and the signatures
//! ([`Operation::fixed`]); each rebuilt body must hash to what was signed, or the state changed
//! in between and the commit is refused as stale.

use aloft_core::api::{CommitInfo, Outcome, PreparedGroup, PreparedUpdate, PublishedGroup, PublishedUpdate};
use aloft_core::manifest::{self, AssetRef, ManifestInput};
use aloft_core::signature::{CodeSignature, Signer};
use aloft_core::time::Millis;
use aloft_core::{ContentHash, Md5Key, Platform, RuntimeVersion, directive};
use aloft_store::db::Conn as SqliteConnection;
use aloft_store::db::apps::App;
use aloft_store::db::audit;
use aloft_store::db::patches;
use aloft_store::db::rollouts;
use aloft_store::db::updates::{self, BodyKind, GroupKind, NewGroup, NewUpdate, RolloutSpec, StoredUpdate};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::Actor;
use super::Error;
use crate::state::AppState;

/// How far ahead of the server clock a publisher-chosen `createdAt` may be.
const MAX_CLOCK_SKEW_MS: i64 = 60_000;

fn stale(message: impl Into<String>) -> Error {
    Error::conflict("stale_commit", message)
}

/// Ids and `createdAt` for a new group: from the commit when there is one, fresh otherwise.
pub(crate) struct Ids<'a> {
    commit: Option<&'a CommitInfo>,
    pub group_id: Uuid,
    pub created_at: Millis,
}

impl<'a> Ids<'a> {
    pub(crate) async fn fix(
        conn: &mut SqliteConnection,
        app_id: i64,
        commit: Option<&'a CommitInfo>,
    ) -> Result<Self, Error> {
        let newest = updates::newest_created_at(conn, app_id).await?;
        let (group_id, created_at) = match commit {
            Some(c) => {
                let t = Millis::parse_iso(&c.created_at)
                    .filter(|t| t.to_iso() == c.created_at)
                    .ok_or_else(|| {
                        Error::invalid(
                            "invalid_created_at",
                            "created_at must look like 2024-05-01T12:34:56.789Z",
                        )
                    })?;
                if t.0 > Millis::now().0 + MAX_CLOCK_SKEW_MS {
                    return Err(Error::invalid("invalid_created_at", "created_at is in the future"));
                }
                if newest.is_some_and(|n| t <= n) {
                    return Err(Error::conflict(
                        "stale_created_at",
                        "another update was published since prepare; prepare again",
                    ));
                }
                (c.group_id, t)
            }
            None => (
                Uuid::new_v4(),
                Millis(Millis::now().0.max(newest.map_or(0, |n| n.0 + 1))),
            ),
        };
        Ok(Self {
            commit,
            group_id,
            created_at,
        })
    }

    pub(crate) fn update_id(&self, platform: Platform, runtime_version: &RuntimeVersion) -> Result<Uuid, Error> {
        match self.commit {
            None => Ok(Uuid::new_v4()),
            Some(c) => c
                .updates
                .iter()
                .find(|u| u.platform == platform && u.runtime_version == runtime_version.as_str())
                .map(|u| u.id)
                .ok_or_else(|| {
                    stale(format!(
                        "the commit has no update for {platform} {runtime_version}; prepare again"
                    ))
                }),
        }
    }
}

/// One update about to be stored.
pub(crate) struct PlannedUpdate {
    pub platform: Platform,
    pub runtime_version: RuntimeVersion,
    pub id: Uuid,
    pub body: Vec<u8>,
    pub blobs: Vec<ContentHash>,
    /// The original update whose content this one carries again.
    pub republished_from: Option<Uuid>,
}

/// A group about to be stored.
pub(crate) struct Plan {
    pub group_id: Uuid,
    pub created_at: Millis,
    pub branch_id: i64,
    pub branch: String,
    pub kind: GroupKind,
    pub message: String,
    pub rollout: Option<RolloutSpec>,
    /// The rollout's halt setting (`aloft_core::halt::Halt`, stored); `None`: as the app says.
    pub halt_policy: Option<String>,
    pub republished_from: Option<Uuid>,
    pub updates: Vec<PlannedUpdate>,
}

/// Everything a manifest is rebuilt from.
pub(crate) struct ManifestParts<'a> {
    pub runtime_version: &'a RuntimeVersion,
    pub launch_asset: &'a AssetRef,
    pub assets: &'a [AssetRef],
    pub expo_client: Option<&'a Value>,
}

pub(crate) fn manifest_update(
    state: &AppState,
    ids: &Ids<'_>,
    platform: Platform,
    parts: ManifestParts<'_>,
) -> Result<PlannedUpdate, Error> {
    let id = ids.update_id(platform, parts.runtime_version)?;
    let metadata = Map::new();
    let body = manifest::build(&ManifestInput {
        id,
        created_at: ids.created_at,
        runtime_version: parts.runtime_version,
        launch_asset: parts.launch_asset,
        assets: parts.assets,
        metadata: &metadata,
        expo_client: parts.expo_client,
        asset_base_url: &state.config.asset_base_url(),
    });
    let mut blobs: Vec<ContentHash> = parts.assets.iter().map(|a| a.hash).collect();
    blobs.push(parts.launch_asset.hash);
    Ok(PlannedUpdate {
        platform,
        runtime_version: parts.runtime_version.clone(),
        id,
        body,
        blobs,
        republished_from: None,
    })
}

/// A `rollBackToEmbedded` directive whose `commitTime` is the group's `createdAt`.
pub(crate) fn directive_update(
    ids: &Ids<'_>,
    platform: Platform,
    runtime_version: RuntimeVersion,
) -> Result<PlannedUpdate, Error> {
    let id = ids.update_id(platform, &runtime_version)?;
    Ok(PlannedUpdate {
        platform,
        runtime_version,
        id,
        body: directive::roll_back_to_embedded(ids.created_at),
        blobs: Vec::new(),
        republished_from: None,
    })
}

/// Rebuilds a stored update with new ids and `createdAt`: the same assets and app config, or for
/// a directive, a new `commitTime`.
pub(crate) fn republished_update(
    state: &AppState,
    ids: &Ids<'_>,
    stored: &StoredUpdate,
    kind: BodyKind,
) -> Result<PlannedUpdate, Error> {
    let mut planned = rebuilt(state, ids, stored, kind)?;
    planned.republished_from = Some(stored.origin);
    Ok(planned)
}

fn rebuilt(state: &AppState, ids: &Ids<'_>, stored: &StoredUpdate, kind: BodyKind) -> Result<PlannedUpdate, Error> {
    if kind == BodyKind::Directive {
        return directive_update(ids, stored.platform, stored.runtime_version.clone());
    }
    let corrupt = |what: &str| Error::internal("a stored manifest cannot be read back", &what);
    let m: Value = serde_json::from_slice(&stored.body).map_err(|e| corrupt(&e.to_string()))?;
    let asset = |v: &Value| -> Result<AssetRef, Error> {
        let hash = v["hash"]
            .as_str()
            .and_then(|h| ContentHash::parse(h).ok())
            .ok_or_else(|| corrupt("hash"))?;
        let key = v["key"]
            .as_str()
            .and_then(|k| Md5Key::parse(k).ok())
            .ok_or_else(|| corrupt("key"))?;
        let ext = v["fileExtension"]
            .as_str()
            .map(|e| e.trim_start_matches('.').to_owned())
            .ok_or_else(|| corrupt("fileExtension"))?;
        Ok(AssetRef { hash, key, ext })
    };
    let launch = asset(&m["launchAsset"])?;
    let assets = m["assets"]
        .as_array()
        .map(|a| a.iter().map(asset).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();
    let expo_client = m["extra"].get("expoClient");
    manifest_update(
        state,
        ids,
        stored.platform,
        ManifestParts {
            runtime_version: &stored.runtime_version,
            launch_asset: &launch,
            assets: &assets,
            expo_client,
        },
    )
}

/// Plans a republish of `source` onto `branch`.
pub(crate) async fn republish_plan(
    state: &AppState,
    conn: &mut SqliteConnection,
    ids: &Ids<'_>,
    source: &updates::Group,
    branch_id: i64,
    branch: &str,
    message: String,
) -> Result<Plan, Error> {
    let stored = updates::stored_updates(conn, source.id).await?;
    let updates = stored
        .iter()
        .map(|s| republished_update(state, ids, s, source.kind.body()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Plan {
        group_id: ids.group_id,
        created_at: ids.created_at,
        branch_id,
        branch: branch.to_owned(),
        kind: source.kind,
        message,
        rollout: None,
        halt_policy: None,
        republished_from: Some(source.republished_from.unwrap_or(source.id)),
        updates,
    })
}

/// Plans a group that republishes the given served manifests (one per platform and runtime
/// version, possibly from different groups) onto `branch`. Directives are left out: a group holds
/// one kind of body, and re-sending a directive is a new rollback, not a republish.
pub(crate) async fn republish_updates_plan(
    state: &AppState,
    conn: &mut SqliteConnection,
    ids: &Ids<'_>,
    sources: &[updates::UpdateRef],
    branch_id: i64,
    branch: &str,
    message: String,
) -> Result<Option<Plan>, Error> {
    let sources: Vec<&updates::UpdateRef> = sources.iter().filter(|s| s.kind == BodyKind::Manifest).collect();
    if sources.is_empty() {
        return Ok(None);
    }
    let mut planned = Vec::with_capacity(sources.len());
    for source in &sources {
        let stored = updates::stored_update(conn, source.id).await?;
        planned.push(republished_update(state, ids, &stored, source.kind)?);
    }
    let first_group = sources[0].group_id;
    let single_source = sources.iter().all(|s| s.group_id == first_group);
    Ok(Some(Plan {
        group_id: ids.group_id,
        created_at: ids.created_at,
        branch_id,
        branch: branch.to_owned(),
        kind: GroupKind::Update,
        message,
        rollout: None,
        halt_policy: None,
        republished_from: single_source.then_some(first_group),
        updates: planned,
    }))
}

/// What an operation did.
pub(crate) enum Finished {
    /// `?prepare=true`: the bodies to sign; nothing was stored.
    Prepared(PreparedGroup),
    /// Stored and recorded: the summary, and the group it published, if any.
    Committed(Outcome),
}

/// What the audit log (and the answer) says an operation did.
pub(crate) struct Record {
    pub action: &'static str,
    pub target: String,
    pub summary: String,
    /// More for the audit entry's details (an object, or null for nothing).
    pub details: Value,
}

impl Record {
    /// The audit entry `by` makes for this record on `app`: its summary, the group it published
    /// (if any) and its own details.
    pub(crate) fn entry(self, by: &Actor, app: &App, published_group: Option<Uuid>) -> audit::Entry {
        let mut details = json!({"summary": self.summary, "published_group": published_group});
        if let (Value::Object(more), Some(details)) = (self.details, details.as_object_mut()) {
            details.extend(more);
        }
        by.entry(Some(app.slug.as_str()), self.action, self.target, details)
    }
}

/// What the caller asks an operation to do with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Only return the bodies to sign (`?prepare=true`); store nothing.
    Prepare,
    /// Store the result. `allow_unsigned`: store unsigned updates even on an app whose earlier
    /// updates were signed.
    Commit { allow_unsigned: bool },
}

/// An operation as asked for: by whom, to what end, with what an earlier prepare fixed, and how
/// it is recorded once committed.
pub(crate) struct Operation<'a> {
    pub by: &'a Actor,
    pub mode: Mode,
    /// The ids, `createdAt` and signatures of an earlier prepare (the request's `commit`).
    pub fixed: Option<&'a CommitInfo>,
    pub record: Record,
}

impl<'a> Operation<'a> {
    /// An operation that never needs a signature: it is stored as soon as it is asked for.
    pub(crate) fn commit(by: &'a Actor, record: Record) -> Self {
        Self {
            by,
            mode: Mode::Commit { allow_unsigned: false },
            fixed: None,
            record,
        }
    }
}

/// Ends an operation: rolls back and returns the bodies (prepare), or signs, stores the plan,
/// records the operation in the audit log, commits and refreshes what devices are served.
pub(crate) async fn finish(
    state: &AppState,
    app: &App,
    mut change: super::Change,
    ids: &Ids<'_>,
    plan: Option<Plan>,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    let Operation { by, mode, record, .. } = op;
    let allow_unsigned = match mode {
        Mode::Commit { allow_unsigned } => allow_unsigned,
        Mode::Prepare => {
            drop(change);
            return Ok(Finished::Prepared(prepared(ids, plan)));
        }
    };
    let published = match plan {
        None => None,
        Some(plan) => {
            let branch = plan.branch.clone();
            let halt_policy = plan.halt_policy.clone();
            let group = sign(app, plan, ids.commit, &by.name)?;
            if !allow_unsigned
                && group.updates.iter().any(|u| u.signature.is_none())
                && updates::app_has_signed_updates(&mut change.tx, app.id).await?
            {
                return Err(Error::conflict(
                    "signature_required",
                    format!(
                        "the earlier updates of app {:?} were signed, so its devices expect signatures and would \
                         stop taking updates; sign with --signing-key and --keyid, or give the app a server-side \
                         key. To store it unsigned anyway, pass --allow-unsigned (allow_unsigned: true)",
                        app.slug.as_str()
                    ),
                ));
            }
            updates::insert_group(&mut change.tx, &group).await?;
            // The patches its updates want, recorded with the group (computed in the background).
            let manifests = group.updates.iter().filter(|_| group.kind.body() == BodyKind::Manifest);
            for update in manifests {
                let target = patches::NewTarget {
                    id: update.id,
                    group_id: group.id,
                    branch_id: group.branch_id,
                    platform: update.platform,
                    runtime_version: &update.runtime_version,
                    body: &update.body,
                };
                patches::enqueue_for_update(&mut change.tx, app.id, &target).await?;
            }
            if halt_policy.is_some() {
                rollouts::set_halt_policy(&mut change.tx, group.id, halt_policy.as_deref()).await?;
            }
            Some(published(state, app, &group, branch))
        }
    };
    let summary = record.summary.clone();
    let entry = record.entry(by, app, published.as_ref().map(|p| p.group_id));
    change.commit(state, app.id, entry).await?;
    if published.is_some() {
        state.want_patches();
    }
    Ok(Finished::Committed(Outcome { summary, published }))
}

/// The bodies a prepare returns, for signing.
fn prepared(ids: &Ids<'_>, plan: Option<Plan>) -> PreparedGroup {
    let updates = plan
        .map(|p| {
            p.updates
                .into_iter()
                .map(|u| PreparedUpdate {
                    platform: u.platform,
                    id: u.id,
                    runtime_version: u.runtime_version.to_string(),
                    kind: p.kind.body_name().to_owned(),
                    body: String::from_utf8_lossy(&u.body).into_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    PreparedGroup {
        group_id: ids.group_id,
        created_at: ids.created_at.to_iso(),
        updates,
    }
}

trait BodyName {
    fn body_name(self) -> &'static str;
}

impl BodyName for GroupKind {
    fn body_name(self) -> &'static str {
        match self.body() {
            BodyKind::Manifest => "manifest",
            BodyKind::Directive => "directive",
        }
    }
}

/// Attaches signatures: the publisher's (checked against the body digest) or the app's
/// server-side key's.
fn sign(app: &App, plan: Plan, commit: Option<&CommitInfo>, published_by: &str) -> Result<NewGroup, Error> {
    let server_key = match (&app.signing_key_pem, &app.signing_keyid) {
        (Some(pem), Some(keyid)) => Some((
            Signer::from_pem(pem).map_err(|e| Error::internal("the app's signing key is unusable", &e))?,
            keyid.clone(),
        )),
        _ => None,
    };
    if let Some(c) = commit
        && c.updates.len() != plan.updates.len()
    {
        return Err(stale(
            "the operation now makes a different set of updates; prepare again",
        ));
    }
    let mut new_updates = Vec::with_capacity(plan.updates.len());
    for u in plan.updates {
        let given = commit.and_then(|c| {
            c.updates
                .iter()
                .find(|cu| cu.platform == u.platform && cu.runtime_version == u.runtime_version.as_str())
        });
        if let Some(given) = given
            && given.sha256 != hex_sha256(&u.body)
        {
            return Err(stale(format!(
                "the {} {} body changed since prepare, so its signature would not match; prepare again",
                u.platform, u.runtime_version
            )));
        }
        let signature = match (given.and_then(|g| g.signature.clone()), &server_key) {
            (Some(sig), _) => Some(
                CodeSignature::new(sig.sig, sig.keyid)
                    .map_err(|e| Error::invalid("invalid_signature", e.to_string()))?,
            ),
            (None, Some((signer, keyid))) => {
                let sig = signer
                    .sign(&u.body)
                    .map_err(|e| Error::internal("signing failed", &e))?;
                Some(CodeSignature::new(sig, keyid.clone()).map_err(|e| Error::internal("signing failed", &e))?)
            }
            (None, None) => None,
        };
        new_updates.push(NewUpdate {
            id: u.id,
            platform: u.platform,
            runtime_version: u.runtime_version,
            body: u.body,
            signature,
            blobs: u.blobs,
            republished_from: u.republished_from,
        });
    }
    new_updates.sort_by_key(|u| (u.platform, u.runtime_version.clone()));
    Ok(NewGroup {
        id: plan.group_id,
        app_id: app.id,
        branch_id: plan.branch_id,
        kind: plan.kind,
        message: plan.message,
        created_at: plan.created_at,
        published_by: published_by.to_owned(),
        rollout: plan.rollout,
        republished_from: plan.republished_from,
        updates: new_updates,
    })
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    ContentHash::of(bytes).to_hex()
}

fn published(state: &AppState, app: &App, group: &NewGroup, branch: String) -> PublishedGroup {
    PublishedGroup {
        group_id: group.id,
        created_at: group.created_at.to_iso(),
        branch,
        message: group.message.clone(),
        manifest_url: state.config.manifest_url(app.slug.as_str()),
        rollout_percentage: group.rollout.as_ref().map(|r| r.percentage),
        updates: group
            .updates
            .iter()
            .map(|u| PublishedUpdate {
                platform: u.platform,
                id: u.id,
                runtime_version: u.runtime_version.to_string(),
                signed: u.signature.is_some(),
            })
            .collect(),
    }
}
