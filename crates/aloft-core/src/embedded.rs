//! What a store build says about its embedded update: where a built `.apk`, `.aab` or `.ipa`
//! keeps the embedded manifest (`app.manifest`, written at build time by expo-updates'
//! `createManifestForBuildAsync`: `{"id": <uuid>, "commitTime": …, "assets": […]}`), the
//! JavaScript bundle, and, on iOS, `Expo.plist` with the runtime version.
//!
//! The embedded manifest carries the update id but not the runtime version. iOS keeps that in
//! `Expo.plist` (`EXUpdatesRuntimeVersion`, XML or binary; `file:fingerprint` means the value is
//! in `EXUpdates.bundle/fingerprint`); Android compiles it into its resources, which are not
//! read here, so an Android package needs `--runtime-version`.
//!
//! Pure logic over entry names and bytes: reading the zip is the caller's.

use uuid::Uuid;

use crate::platform::Platform;

/// A built package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageKind {
    Apk,
    Aab,
    Ipa,
}

impl PackageKind {
    /// The kind a file name's extension says, if it is one.
    pub fn of_file_name(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "apk" => Some(Self::Apk),
            "aab" => Some(Self::Aab),
            "ipa" => Some(Self::Ipa),
            _ => None,
        }
    }

    pub fn platform(self) -> Platform {
        match self {
            Self::Apk | Self::Aab => Platform::Android,
            Self::Ipa => Platform::Ios,
        }
    }
}

/// The entries of a package that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The embedded manifest, `app.manifest`.
    pub manifest: String,
    /// The JavaScript (Hermes) bundle the app launches with.
    pub bundle: String,
    /// iOS: `Expo.plist`, which names the runtime version.
    pub plist: Option<String>,
    /// iOS: `EXUpdates.bundle/fingerprint`, the runtime version under the fingerprint policy.
    pub fingerprint: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EmbeddedError {
    #[error("the package has no {0}: is expo-updates installed in this build (and is it a release build)?")]
    Missing(String),
    #[error("app.manifest is not the embedded manifest expo-updates writes (a JSON object with an \"id\" UUID)")]
    BadManifest,
}

/// Finds the embedded manifest and bundle (and on iOS the plist) among a package's entry names.
pub fn locate<'a>(kind: PackageKind, names: impl IntoIterator<Item = &'a str>) -> Result<Layout, EmbeddedError> {
    let names: Vec<&str> = names.into_iter().collect();
    let has = |n: &str| names.contains(&n);
    match kind {
        PackageKind::Apk | PackageKind::Aab => {
            let root = if kind == PackageKind::Aab {
                "base/assets/"
            } else {
                "assets/"
            };
            let manifest = format!("{root}app.manifest");
            let bundle = format!("{root}index.android.bundle");
            for needed in [&manifest, &bundle] {
                if !has(needed) {
                    return Err(EmbeddedError::Missing(needed.clone()));
                }
            }
            Ok(Layout {
                manifest,
                bundle,
                plist: None,
                fingerprint: None,
            })
        }
        PackageKind::Ipa => {
            // `Payload/<Name>.app/` holds the app; nested bundles (extensions, frameworks) do not.
            let app = names
                .iter()
                .filter_map(|n| {
                    let rest = n.strip_prefix("Payload/")?;
                    let (dir, _) = rest.split_once(".app/")?;
                    (!dir.contains('/')).then(|| format!("Payload/{dir}.app/"))
                })
                .next()
                .ok_or_else(|| EmbeddedError::Missing("Payload/<App>.app folder".into()))?;
            let manifest = [
                format!("{app}EXUpdates.bundle/app.manifest"),
                format!("{app}app.manifest"),
            ]
            .into_iter()
            .find(|m| has(m))
            .ok_or_else(|| EmbeddedError::Missing(format!("{app}EXUpdates.bundle/app.manifest")))?;
            let bundle = format!("{app}main.jsbundle");
            if !has(&bundle) {
                return Err(EmbeddedError::Missing(bundle));
            }
            let plist = format!("{app}Expo.plist");
            let fingerprint = format!("{app}EXUpdates.bundle/fingerprint");
            Ok(Layout {
                manifest,
                bundle,
                plist: has(&plist).then_some(plist),
                fingerprint: has(&fingerprint).then_some(fingerprint),
            })
        }
    }
}

/// The embedded update id of an `app.manifest`, lower-cased as the client sends it.
pub fn update_id(app_manifest: &[u8]) -> Result<Uuid, EmbeddedError> {
    #[derive(serde::Deserialize)]
    struct Embedded {
        id: String,
    }
    let embedded: Embedded = serde_json::from_slice(app_manifest).map_err(|_| EmbeddedError::BadManifest)?;
    Uuid::parse_str(embedded.id.trim()).map_err(|_| EmbeddedError::BadManifest)
}

/// The runtime version an iOS build was made for: `EXUpdatesRuntimeVersion` of its
/// `Expo.plist`, or under the fingerprint policy the `fingerprint` file's content.
pub fn ios_runtime_version(plist: &[u8], fingerprint: Option<&[u8]>) -> Option<String> {
    let value = plist_string(plist, "EXUpdatesRuntimeVersion")?;
    if value == "file:fingerprint" {
        let text = std::str::from_utf8(fingerprint?).ok()?.trim();
        return (!text.is_empty()).then(|| text.to_owned());
    }
    Some(value)
}

/// A string value of the top-level dictionary of a property list, XML or binary (`bplist00`).
pub fn plist_string(plist: &[u8], key: &str) -> Option<String> {
    if plist.starts_with(b"bplist00") {
        binary_plist_string(plist, key)
    } else {
        xml_plist_string(std::str::from_utf8(plist).ok()?, key)
    }
}

fn xml_plist_string(text: &str, key: &str) -> Option<String> {
    let marker = format!("<key>{key}</key>");
    let rest = text[text.find(&marker)? + marker.len()..].trim_start();
    let value = rest.strip_prefix("<string>")?;
    let value = &value[..value.find("</string>")?];
    Some(
        value
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Reads a big-endian unsigned number of `width` bytes at `at`.
fn be(data: &[u8], at: usize, width: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(width)?)?;
    if width > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

/// The binary form: a trailer names the offset table and the top object; a dictionary is its
/// key references followed by its value references.
fn binary_plist_string(data: &[u8], key: &str) -> Option<String> {
    let trailer = data.len().checked_sub(32)?;
    let offset_size = usize::from(data[trailer + 6]);
    let ref_size = usize::from(data[trailer + 7]);
    let objects = usize::try_from(be(data, trailer + 8, 8)?).ok()?;
    let top = usize::try_from(be(data, trailer + 16, 8)?).ok()?;
    let table = usize::try_from(be(data, trailer + 24, 8)?).ok()?;
    let object_at = |index: usize| -> Option<usize> {
        if index >= objects {
            return None;
        }
        usize::try_from(be(
            data,
            table.checked_add(index.checked_mul(offset_size)?)?,
            offset_size,
        )?)
        .ok()
    };
    // An object's marker and length; lengths of 15 and more follow as an integer object.
    let header = |at: usize| -> Option<(u8, usize, usize)> {
        let marker = *data.get(at)?;
        let (kind, info) = (marker >> 4, marker & 0x0f);
        if info != 0x0f {
            return Some((kind, usize::from(info), at + 1));
        }
        let int_marker = *data.get(at + 1)?;
        if int_marker >> 4 != 0x1 {
            return None;
        }
        let width = 1usize << (int_marker & 0x0f);
        let len = usize::try_from(be(data, at + 2, width)?).ok()?;
        Some((kind, len, at + 2 + width))
    };
    let string = |index: usize| -> Option<String> {
        let (kind, len, start) = header(object_at(index)?)?;
        match kind {
            0x5 => Some(String::from_utf8_lossy(data.get(start..start.checked_add(len)?)?).into_owned()),
            0x6 => {
                let raw = data.get(start..start.checked_add(len.checked_mul(2)?)?)?;
                let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                String::from_utf16(&units).ok()
            }
            _ => None,
        }
    };
    let (kind, count, start) = header(object_at(top)?)?;
    if kind != 0xd {
        return None;
    }
    let reference = |i: usize| -> Option<usize> {
        usize::try_from(be(data, start.checked_add(i.checked_mul(ref_size)?)?, ref_size)?).ok()
    };
    (0..count)
        .find(|&i| reference(i).and_then(string).as_deref() == Some(key))
        .and_then(|i| string(reference(count + i)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_platforms() {
        assert_eq!(
            PackageKind::of_file_name("build/app-release.APK"),
            Some(PackageKind::Apk)
        );
        assert_eq!(
            PackageKind::of_file_name("x.aab").map(PackageKind::platform),
            Some(Platform::Android)
        );
        assert_eq!(
            PackageKind::of_file_name("My App.ipa").map(PackageKind::platform),
            Some(Platform::Ios)
        );
        assert_eq!(PackageKind::of_file_name("main.jsbundle"), None);
        assert_eq!(PackageKind::of_file_name("apk"), None);
    }

    #[test]
    fn layouts() {
        let apk = [
            "AndroidManifest.xml",
            "assets/app.manifest",
            "assets/index.android.bundle",
        ];
        let found = locate(PackageKind::Apk, apk).unwrap();
        assert_eq!(found.bundle, "assets/index.android.bundle");
        assert_eq!(
            locate(PackageKind::Aab, apk),
            Err(EmbeddedError::Missing("base/assets/app.manifest".into()))
        );
        let aab = ["base/assets/app.manifest", "base/assets/index.android.bundle"];
        assert_eq!(
            locate(PackageKind::Aab, aab).unwrap().manifest,
            "base/assets/app.manifest"
        );
        assert!(matches!(
            locate(PackageKind::Apk, ["assets/app.manifest"]),
            Err(EmbeddedError::Missing(m)) if m == "assets/index.android.bundle"
        ));

        let ipa = [
            "Payload/Demo.app/Info.plist",
            "Payload/Demo.app/Expo.plist",
            "Payload/Demo.app/main.jsbundle",
            "Payload/Demo.app/EXUpdates.bundle/app.manifest",
            "Payload/Demo.app/PlugIns/Widget.appex/app.manifest",
        ];
        let found = locate(PackageKind::Ipa, ipa).unwrap();
        assert_eq!(found.manifest, "Payload/Demo.app/EXUpdates.bundle/app.manifest");
        assert_eq!(found.bundle, "Payload/Demo.app/main.jsbundle");
        assert_eq!(found.plist.as_deref(), Some("Payload/Demo.app/Expo.plist"));
        assert_eq!(found.fingerprint, None);
        assert!(locate(PackageKind::Ipa, ["Payload/Demo.app/main.jsbundle"]).is_err());
        assert!(locate(PackageKind::Ipa, ["assets/app.manifest"]).is_err());
    }

    #[test]
    fn update_ids() {
        let id = update_id(br#"{"id":"7C2E8F4A-1B3D-4E5F-9A8B-6C7D8E9F0A1B","commitTime":1,"assets":[]}"#).unwrap();
        assert_eq!(id.to_string(), "7c2e8f4a-1b3d-4e5f-9a8b-6c7d8e9f0a1b");
        assert_eq!(update_id(b"{}"), Err(EmbeddedError::BadManifest));
        assert_eq!(update_id(br#"{"id":"nope"}"#), Err(EmbeddedError::BadManifest));
        assert_eq!(update_id(b"\x00\x01"), Err(EmbeddedError::BadManifest));
    }

    #[test]
    fn xml_plists() {
        let plist = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
  <key>EXUpdatesEnabled</key><true/>
  <key>EXUpdatesRuntimeVersion</key>
  <string>1.0.0 &amp; more</string>
</dict></plist>"#;
        assert_eq!(ios_runtime_version(plist, None).as_deref(), Some("1.0.0 & more"));
        assert_eq!(plist_string(plist, "EXUpdatesEnabled"), None);
        let fp = br"<dict><key>EXUpdatesRuntimeVersion</key><string>file:fingerprint</string></dict>";
        assert_eq!(ios_runtime_version(fp, Some(b"abc123\n")).as_deref(), Some("abc123"));
        assert_eq!(ios_runtime_version(fp, None), None);
    }

    /// A binary plist `{"EXUpdatesEnabled": true, "EXUpdatesRuntimeVersion": <value>}`, laid out
    /// as `plutil -convert binary1` writes one.
    fn binary_plist(value: &str, utf16: bool) -> Vec<u8> {
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        // 0: the dictionary: two keys (objects 1, 2), two values (3, 4).
        offsets.push(out.len());
        out.extend([0xd2, 1, 2, 3, 4]);
        for key in ["EXUpdatesEnabled", "EXUpdatesRuntimeVersion"] {
            offsets.push(out.len());
            if key.len() < 15 {
                out.push(0x50 | key.len() as u8);
            } else {
                out.extend([0x5f, 0x10, key.len() as u8]);
            }
            out.extend(key.as_bytes());
        }
        offsets.push(out.len());
        out.push(0x09); // true
        offsets.push(out.len());
        if utf16 {
            let units: Vec<u16> = value.encode_utf16().collect();
            out.extend([0x6f, 0x10, units.len() as u8]);
            for u in units {
                out.extend(u.to_be_bytes());
            }
        } else {
            out.extend([0x5f, 0x10, value.len() as u8]);
            out.extend(value.as_bytes());
        }
        let table = out.len();
        for o in &offsets {
            out.push(*o as u8);
        }
        out.extend([0, 0, 0, 0, 0, 0, 1, 1]);
        out.extend((offsets.len() as u64).to_be_bytes());
        out.extend(0u64.to_be_bytes());
        out.extend((table as u64).to_be_bytes());
        out
    }

    #[test]
    fn binary_plists() {
        let plist = binary_plist("exposdk:57.0.0-build.3", false);
        assert_eq!(
            ios_runtime_version(&plist, None).as_deref(),
            Some("exposdk:57.0.0-build.3")
        );
        assert_eq!(plist_string(&plist, "Missing"), None);
        let wide = binary_plist("1.0.0-β", true);
        assert_eq!(
            plist_string(&wide, "EXUpdatesRuntimeVersion").as_deref(),
            Some("1.0.0-β")
        );
        // Damaged files read as nothing, never a panic.
        for cut in [8, 20, plist.len() - 1] {
            let _ = plist_string(&plist[..cut], "EXUpdatesRuntimeVersion");
        }
        let mut bad = plist.clone();
        let n = bad.len();
        bad[n - 9] = 0xff; // offset table past the end
        assert_eq!(plist_string(&bad, "EXUpdatesRuntimeVersion"), None);
    }
}
