//! Small pieces the pages share: what to call things, and how to show numbers and times.

use std::collections::HashSet;

use aloft_core::Platform;
use aloft_core::time::Millis;
use aloft_store::db::apps::App;
use aloft_store::db::updates::{self, Group};
use qrcode::QrCode;
use qrcode::render::svg;

use super::Failure;
use crate::api::auth::{Caller, Need};
use crate::service::input;
use crate::state::AppState;

/// The notice shown after a change, by the key the change redirects with (a fixed list, so a
/// link cannot make the page say anything else).
pub(super) fn notice(key: &str) -> Option<&'static str> {
    Some(match key {
        "rollout-set" => "The rollout percentage was raised.",
        "rollout-complete" => "The rollout was completed: every device gets the group.",
        "rollout-revert" => "The rollout was reverted: devices are moved back to the control.",
        "disabled" => "The group was disabled.",
        "republished" => "The group was republished.",
        "rolled-back" => "The channel was rolled back.",
        "repointed" => "The channel now points at the new branch.",
        "channel-rollout" => "The channel's branch rollout was changed.",
        "halt-policy" => "The halt policy was saved.",
        "token-revoked" => "The token was revoked.",
        "webhook-added" => "The webhook was added.",
        "webhook-removed" => "The webhook was removed.",
        "user-removed" => "The user was removed.",
        _ => return None,
    })
}

/// A time as people read it: `2026-12-01 06:40 UTC`.
pub(super) fn when(at: Millis) -> String {
    let iso = at.to_iso();
    format!(
        "{} {} UTC",
        iso.get(..10).unwrap_or(&iso),
        iso.get(11..16).unwrap_or("")
    )
}

pub(super) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KB", n as f64 / f64::from(1 << 10)),
        n => format!("{n} B"),
    }
}

/// A percentage typed in a form (`30` or `30%`).
pub(super) fn percentage(value: Option<&str>) -> Result<input::Percentage, Failure> {
    let text = value.unwrap_or_default().trim().trim_end_matches('%');
    let p: u8 = text.parse().map_err(|_| {
        Failure::from(crate::service::Error::invalid(
            "invalid_percentage",
            format!("a percentage is a whole number from 1 to 100, not {text:?}"),
        ))
    })?;
    Ok(input::Percentage::new(p)?)
}

/// A rate given in percent.
pub(super) fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}%"))
}

/// The state of each group of a branch (newest first): live, rolling out, halted, reverted,
/// disabled, or superseded (every update of it has a newer served one on the branch).
pub(super) fn states(groups: &[Group]) -> Vec<&'static str> {
    let mut newer: HashSet<(Platform, String)> = HashSet::new();
    groups
        .iter()
        .map(|g| {
            let keys: Vec<(Platform, String)> = g
                .updates
                .iter()
                .filter(|u| u.withdrawn.is_none())
                .map(|u| (u.platform, u.runtime_version.to_string()))
                .collect();
            let state = match (&g.disabled, &g.rollout) {
                (Some((_, reason)), _) => match reason.as_str() {
                    "rollout_halted" => "halted",
                    "rollout_reverted" => "reverted",
                    _ => "disabled",
                },
                (None, Some(_)) => "rolling out",
                (None, None) if !keys.is_empty() && keys.iter().all(|k| newer.contains(k)) => "superseded",
                (None, None) => "live",
            };
            // A rollout does not supersede what it rolls out over: devices outside it keep that.
            if g.disabled.is_none() && g.rollout.is_none() {
                newer.extend(keys);
            }
            state
        })
        .collect()
}

/// Whether the server can store changes that publish (rollback, republish, disable, revert):
/// with its own key, or for an app that has never been signed. Otherwise the publisher's key
/// is needed, and the page shows the `aloft` command instead.
pub(super) async fn server_can_sign(state: &AppState, app: &App) -> Result<bool, Failure> {
    if app.signing_key_pem.is_some() {
        return Ok(true);
    }
    let mut conn = state.db.conn().await?;
    Ok(!updates::app_has_signed_updates(&mut conn, app.id).await?)
}

/// The app `slug`, if the signed-in caller may `need` it (the API's rule).
pub(super) async fn app(state: &AppState, caller: &Caller, slug: &str, need: Need) -> Result<App, Failure> {
    Ok(caller.app(state, slug, need).await?)
}

/// Whether the caller may change the app (sees the controls).
pub(super) fn can_write(caller: &Caller) -> bool {
    !matches!(caller.scope, aloft_store::db::tokens::Scope::Read(_))
}

/// A QR code of `text`, as inline SVG.
pub(super) fn qr(text: &str) -> String {
    match QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<svg::Color<'_>>()
            .min_dimensions(180, 180)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

/// A value for a URL's query.
pub(super) fn query_value(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MB");
        assert_eq!(percent(Some(5.124)), "5.12%");
        assert_eq!(percent(None), "–");
        assert_eq!(when(Millis(0)), "1970-01-01 00:00 UTC");
    }

    #[test]
    fn a_qr_code_is_svg() {
        let svg = qr("exp+app://expo-development-client/?url=http%3A%2F%2Fx");
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }

    #[test]
    fn unknown_notices_say_nothing() {
        assert!(notice("rollout-set").is_some());
        assert!(notice("<script>").is_none());
    }
}
