//! Validated names parsed at the edge, so handlers never hold a raw `String`.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                let check: fn(&str) -> bool = $check;
                if check(&value) {
                    Ok(Self(value))
                } else {
                    Err(NameError { kind: $kind, value, rule: $rule })
                }
            }

            /// Checks a borrowed value without taking a copy (the update check's hot path).
            pub fn validate(value: &str) -> Result<&str, NameError> {
                let check: fn(&str) -> bool = $check;
                if check(value) {
                    Ok(value)
                } else {
                    Err(NameError { kind: $kind, value: value.to_owned(), rule: $rule })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
    };
}

fn is_slug(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// Channel and branch names: what `eas` accepts in practice (letters, digits, `-_./`).
fn is_ref_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        && !s.starts_with('.')
        && !s.contains("..")
}

/// Runtime versions are opaque strings matched exactly (fingerprints, `1.0.0`, `exposdk:50.0.0`).
fn is_runtime_version(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

name_type!(
    /// The URL-safe name of an app: `/apps/{slug}/manifest`.
    AppSlug, "app slug", is_slug, "use 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit"
);
name_type!(
    /// A channel: the name a build sends in `expo-channel-name`.
    ChannelName, "channel name", is_ref_name, "use 1-128 letters, digits, '-', '_', '.' or '/'"
);
name_type!(
    /// A branch: an ordered list of update groups a channel points at.
    BranchName, "branch name", is_ref_name, "use 1-128 letters, digits, '-', '_', '.' or '/'"
);
name_type!(
    /// The runtime version a build was made with; updates match it exactly.
    RuntimeVersion, "runtime version", is_runtime_version, "use 1-256 printable ASCII characters without spaces"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(AppSlug::parse("demo-app_2").is_ok());
        for bad in ["", "-x", "Demo", "a/b", "a b", "../x", &"a".repeat(65)] {
            assert!(AppSlug::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn channels_and_runtime_versions() {
        assert!(ChannelName::parse("production").is_ok());
        assert!(ChannelName::parse("release/1.2").is_ok());
        assert!(ChannelName::parse("..").is_err());
        assert!(ChannelName::parse("a b").is_err());
        assert!(RuntimeVersion::parse("exposdk:50.0.0").is_ok());
        assert!(RuntimeVersion::parse("1.0 .0").is_err());
        assert!(RuntimeVersion::parse("").is_err());
    }

    #[test]
    fn validate_agrees_with_parse() {
        for value in ["production", "release/1.2", "..", "a b", "", "exposdk:50.0.0", "1.0 .0"] {
            assert_eq!(
                ChannelName::validate(value).is_ok(),
                ChannelName::parse(value).is_ok(),
                "{value:?}"
            );
            assert_eq!(
                RuntimeVersion::validate(value).is_ok(),
                RuntimeVersion::parse(value).is_ok(),
                "{value:?}"
            );
            assert_eq!(
                ChannelName::validate(value).err(),
                ChannelName::parse(value).err(),
                "{value:?}"
            );
        }
    }
}
