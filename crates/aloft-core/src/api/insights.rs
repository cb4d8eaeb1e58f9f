//! The insights, rollout status and halt policy bodies of the management API.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::halt::HaltPolicy;
use crate::platform::Platform;

/// What devices did with an update group, per platform (`GET …/groups/{group}/insights`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupInsights {
    pub group_id: Uuid,
    /// The first day counted (UTC), `YYYY-MM-DD`.
    pub since: String,
    pub platforms: Vec<PlatformInsights>,
}

/// One platform's update of a group: distinct devices over the period.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformInsights {
    pub platform: Platform,
    pub update_id: Uuid,
    /// Devices served the update's manifest.
    pub devices: u64,
    /// Devices that downloaded its launch asset.
    pub installs: u64,
    /// Devices seen running it (checking with it as `Expo-Current-Update-ID`).
    pub launches: u64,
    /// Devices that listed it in `Expo-Recent-Failed-Update-IDs`.
    pub failures: u64,
    /// `failures / (launches + failures)`, in percent; null before any device reported.
    pub failure_rate: Option<f64>,
    /// Whether the counts are exact (up to 4,096 devices each) or estimates (within about 2 %).
    pub exact: bool,
    /// The most frequent `Expo-Fatal-Error` texts, most frequent first.
    pub fatal_errors: Vec<FatalErrorCount>,
    /// Per UTC day, oldest first.
    pub daily: Vec<DailyInsights>,
    /// Downloads of the launch asset answered with a bundle patch instead (since the update was
    /// published, not only in the period).
    #[serde(default)]
    pub patches_served: u64,
    /// Bytes those patches saved: per patch, its downloads × (the bundle's brotli size − the
    /// patch's size).
    #[serde(default)]
    pub patch_bytes_saved: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FatalErrorCount {
    pub message: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyInsights {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    pub devices: u64,
    pub installs: u64,
    pub launches: u64,
    pub failures: u64,
    pub failure_rate: Option<f64>,
}

/// What the devices of an app run, per channel, platform and runtime version, on one day
/// (`GET /apps/{slug}/insights`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetInsights {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    pub runtimes: Vec<RuntimeFleet>,
    /// Checks naming channels the app does not have, most first (a build configured for a
    /// channel nobody created).
    pub unknown_channels: Vec<UnknownChannel>,
}

/// Devices of one channel, platform and runtime version.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeFleet {
    pub channel: String,
    pub platform: Platform,
    pub runtime_version: String,
    /// Devices on their embedded update.
    pub embedded: u64,
    /// Devices on each update, most first.
    pub updates: Vec<UpdateShare>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateShare {
    pub update_id: Uuid,
    pub devices: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnknownChannel {
    pub channel: String,
    pub checks: i64,
}

/// A group rollout and its live figures against its halt policy
/// (`GET /apps/{slug}/groups/{group}/rollout`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RolloutStatus {
    pub group_id: Uuid,
    /// `rolling_out`, `complete` (every device gets it), `halted` (stopped by its halt policy),
    /// `reverted`, `disabled`.
    pub state: String,
    /// While rolling out: the share of devices that get it.
    #[serde(default)]
    pub percentage: Option<u8>,
    /// The policy in force; null when the rollout never halts by itself.
    #[serde(default)]
    pub policy: Option<HaltPolicy>,
    pub platforms: Vec<RolloutFigures>,
}

/// One rolled-out update's figures (distinct devices over the last seven days).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RolloutFigures {
    pub platform: Platform,
    pub runtime_version: String,
    pub update_id: Uuid,
    pub installs: u64,
    pub launches: u64,
    pub failures: u64,
    #[serde(default)]
    pub failure_rate: Option<f64>,
    #[serde(default)]
    pub control_update_id: Option<Uuid>,
    #[serde(default)]
    pub control_failure_rate: Option<f64>,
    /// Whether these figures are past the policy (the rollout halts at the next look).
    pub past_policy: bool,
}

/// The halt policy of an app's rollouts that set none (`PUT /apps/{slug}/halt-policy`): a
/// policy, `off`, or neither to go back to the built-in default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetHaltPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<HaltPolicy>,
    /// The app's rollouts never halt by themselves unless a rollout sets a policy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub off: bool,
}
