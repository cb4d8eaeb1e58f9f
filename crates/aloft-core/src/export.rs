//! What `npx expo export` writes (docs/protocol.md §6): parsing `metadata.json` and deriving the
//! runtime version from the public app config. Pure: the CLI does the file reading.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::content_type::is_valid_extension;
use crate::names::RuntimeVersion;
use crate::platform::Platform;

/// A path inside the export folder: relative, `/`-separated, no `.`/`..` segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistPath(String);

impl DistPath {
    pub fn parse(path: &str) -> Result<Self, MetadataError> {
        let bad = || MetadataError::UnsafePath(path.to_owned());
        if path.is_empty() || path.starts_with('/') || path.contains('\\') || path.contains('\0') || path.contains(':')
        {
            return Err(bad());
        }
        if path.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
            return Err(bad());
        }
        Ok(Self(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The file extension of the path, if any (`hbc` for `…/index-abc.hbc`).
    pub fn extension(&self) -> Option<&str> {
        let name = self.0.rsplit('/').next()?;
        let (_, ext) = name.rsplit_once('.')?;
        Some(ext)
    }
}

/// One asset listed for a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportAsset {
    pub path: DistPath,
    /// Without the dot, as `metadata.json` records it.
    pub ext: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformExport {
    pub bundle: DistPath,
    pub assets: Vec<ExportAsset>,
}

/// A validated `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportMetadata {
    pub platforms: BTreeMap<Platform, PlatformExport>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata.json is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("metadata.json has version {0}; only version 0 (written by `expo export`) is understood")]
    UnsupportedVersion(i64),
    #[error("metadata.json was written by bundler {0:?}; only \"metro\" is supported")]
    UnsupportedBundler(String),
    #[error("metadata.json lists no ios or android platform; run `npx expo export --platform all`")]
    NoPlatforms,
    #[error("metadata.json names the path {0:?}, which is not a plain relative path inside the export folder")]
    UnsafePath(String),
    #[error("metadata.json gives asset {path:?} the extension {ext:?}; extensions are 1-16 letters or digits")]
    BadExtension { path: String, ext: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetadata {
    version: i64,
    bundler: String,
    file_metadata: BTreeMap<String, RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    bundle: String,
    #[serde(default)]
    assets: Vec<RawAsset>,
}

#[derive(Deserialize)]
struct RawAsset {
    path: String,
    ext: String,
}

impl ExportMetadata {
    pub fn parse(bytes: &[u8]) -> Result<Self, MetadataError> {
        let raw: RawMetadata = serde_json::from_slice(bytes).map_err(|e| MetadataError::Malformed(e.to_string()))?;
        if raw.version != 0 {
            return Err(MetadataError::UnsupportedVersion(raw.version));
        }
        if raw.bundler != "metro" {
            return Err(MetadataError::UnsupportedBundler(raw.bundler));
        }
        let mut platforms = BTreeMap::new();
        for (name, files) in raw.file_metadata {
            // `web` and anything unknown is not served over the updates protocol.
            let Ok(platform) = name.parse::<Platform>() else {
                continue;
            };
            let bundle = DistPath::parse(&files.bundle)?;
            let mut assets = Vec::with_capacity(files.assets.len());
            for asset in files.assets {
                let path = DistPath::parse(&asset.path)?;
                let ext = asset.ext.trim_start_matches('.').to_owned();
                if !is_valid_extension(&ext) {
                    return Err(MetadataError::BadExtension {
                        path: asset.path,
                        ext: asset.ext,
                    });
                }
                assets.push(ExportAsset { path, ext });
            }
            platforms.insert(platform, PlatformExport { bundle, assets });
        }
        if platforms.is_empty() {
            return Err(MetadataError::NoPlatforms);
        }
        Ok(Self { platforms })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeVersionError {
    #[error("the app config has no runtimeVersion; set one in app.json or pass --runtime-version")]
    Missing,
    #[error(
        "runtimeVersion policy \"fingerprint\" is computed by @expo/fingerprint; pass --runtime-version with the value your build uses (`npx expo-updates fingerprint:generate`)"
    )]
    Fingerprint,
    #[error("runtimeVersion policy {policy:?} needs {field:?} in the app config")]
    MissingField { policy: String, field: &'static str },
    #[error("runtimeVersion policy {0:?} is not one of appVersion, nativeVersion, sdkVersion, fingerprint")]
    UnknownPolicy(String),
    #[error("runtimeVersion must be a string or {{\"policy\": …}}")]
    BadShape,
    #[error(transparent)]
    Invalid(#[from] crate::names::NameError),
}

/// The runtime version a build of `platform` has, from the public app config (`exp`, or an
/// `app.json` with a top-level `expo` key). Platform-level `runtimeVersion` wins.
pub fn runtime_version(config: &Value, platform: Platform) -> Result<RuntimeVersion, RuntimeVersionError> {
    let exp = config.get("expo").unwrap_or(config);
    let platform_cfg = exp.get(platform.as_str());
    let rv = platform_cfg
        .and_then(|p| p.get("runtimeVersion"))
        .or_else(|| exp.get("runtimeVersion"))
        .ok_or(RuntimeVersionError::Missing)?;
    let text = match rv {
        Value::String(s) => s.clone(),
        Value::Object(obj) => {
            let policy = obj
                .get("policy")
                .and_then(Value::as_str)
                .ok_or(RuntimeVersionError::BadShape)?;
            let field = |name: &'static str| {
                exp.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
                    RuntimeVersionError::MissingField {
                        policy: policy.to_owned(),
                        field: name,
                    }
                })
            };
            match policy {
                "appVersion" => field("version")?,
                "nativeVersion" => {
                    let version = field("version")?;
                    // Expo's defaults when the build number is not configured.
                    let build = match platform {
                        Platform::Ios => platform_cfg
                            .and_then(|p| p.get("buildNumber"))
                            .and_then(Value::as_str)
                            .unwrap_or("1")
                            .to_owned(),
                        Platform::Android => platform_cfg
                            .and_then(|p| p.get("versionCode"))
                            .map(|v| {
                                v.as_i64()
                                    .map(|n| n.to_string())
                                    .or_else(|| v.as_str().map(str::to_owned))
                            })
                            .unwrap_or(None)
                            .unwrap_or_else(|| "1".to_owned()),
                    };
                    format!("{version}({build})")
                }
                "sdkVersion" => format!("exposdk:{}", field("sdkVersion")?),
                "fingerprint" => return Err(RuntimeVersionError::Fingerprint),
                other => return Err(RuntimeVersionError::UnknownPolicy(other.to_owned())),
            }
        }
        _ => return Err(RuntimeVersionError::BadShape),
    };
    Ok(RuntimeVersion::parse(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SAMPLE: &str = r#"{"version":0,"bundler":"metro","fileMetadata":{"ios":{"bundle":"_expo/static/js/ios/index-a5.hbc","assets":[{"path":"assets/d9f4","ext":"png"}]},"android":{"bundle":"_expo/static/js/android/index-61.hbc","assets":[{"path":"assets/d9f4","ext":"png"}]},"web":{"bundle":"x.js","assets":[]}}}"#;

    #[test]
    fn parses_an_export() {
        let m = ExportMetadata::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(m.platforms.len(), 2);
        let ios = &m.platforms[&Platform::Ios];
        assert_eq!(ios.bundle.as_str(), "_expo/static/js/ios/index-a5.hbc");
        assert_eq!(ios.bundle.extension(), Some("hbc"));
        assert_eq!(ios.assets[0].ext, "png");
    }

    #[test]
    fn refuses_paths_outside_the_export() {
        for path in [
            "../secret",
            "/etc/passwd",
            "assets/../../x",
            "a\\b",
            "",
            "C:/x",
            "assets//x",
            "./x",
        ] {
            let doc = format!(
                r#"{{"version":0,"bundler":"metro","fileMetadata":{{"ios":{{"bundle":"b.hbc","assets":[{{"path":{path:?},"ext":"png"}}]}}}}}}"#
            );
            assert_eq!(
                ExportMetadata::parse(doc.as_bytes()),
                Err(MetadataError::UnsafePath(path.into())),
                "{path}"
            );
        }
    }

    #[test]
    fn refuses_other_shapes() {
        assert!(matches!(ExportMetadata::parse(b"{"), Err(MetadataError::Malformed(_))));
        assert!(matches!(
            ExportMetadata::parse(br#"{"version":1,"bundler":"metro","fileMetadata":{}}"#),
            Err(MetadataError::UnsupportedVersion(1))
        ));
        assert_eq!(
            ExportMetadata::parse(br#"{"version":0,"bundler":"metro","fileMetadata":{"web":{"bundle":"a.js"}}}"#),
            Err(MetadataError::NoPlatforms)
        );
        assert!(matches!(
            ExportMetadata::parse(br#"{"version":0,"bundler":"metro","fileMetadata":{"ios":{"bundle":"a.js","assets":[{"path":"a","ext":"p/ng"}]}}}"#),
            Err(MetadataError::BadExtension { .. })
        ));
    }

    #[test]
    fn runtime_version_policies() {
        let rv = |cfg: Value, p| runtime_version(&cfg, p).map(|r| r.to_string());
        assert_eq!(rv(json!({"runtimeVersion": "1.0.0"}), Platform::Ios).unwrap(), "1.0.0");
        assert_eq!(
            rv(json!({"expo": {"runtimeVersion": "2"}}), Platform::Ios).unwrap(),
            "2"
        );
        assert_eq!(
            rv(
                json!({"version": "1.2.3", "runtimeVersion": {"policy": "appVersion"}}),
                Platform::Android
            )
            .unwrap(),
            "1.2.3"
        );
        let native = json!({"version": "1.2.3", "runtimeVersion": {"policy": "nativeVersion"},
            "ios": {"buildNumber": "7"}, "android": {"versionCode": 12}});
        assert_eq!(rv(native.clone(), Platform::Ios).unwrap(), "1.2.3(7)");
        assert_eq!(rv(native, Platform::Android).unwrap(), "1.2.3(12)");
        assert_eq!(
            rv(
                json!({"version": "1", "runtimeVersion": {"policy": "nativeVersion"}}),
                Platform::Ios
            )
            .unwrap(),
            "1(1)"
        );
        assert_eq!(
            rv(
                json!({"sdkVersion": "50.0.0", "runtimeVersion": {"policy": "sdkVersion"}}),
                Platform::Ios
            )
            .unwrap(),
            "exposdk:50.0.0"
        );
        assert_eq!(
            rv(
                json!({"runtimeVersion": "1", "android": {"runtimeVersion": "2"}}),
                Platform::Android
            )
            .unwrap(),
            "2"
        );
        assert_eq!(
            rv(json!({"runtimeVersion": {"policy": "fingerprint"}}), Platform::Ios),
            Err(RuntimeVersionError::Fingerprint)
        );
        assert_eq!(rv(json!({}), Platform::Ios), Err(RuntimeVersionError::Missing));
        assert!(matches!(
            rv(json!({"runtimeVersion": {"policy": "appVersion"}}), Platform::Ios),
            Err(RuntimeVersionError::MissingField { field: "version", .. })
        ));
    }
}
