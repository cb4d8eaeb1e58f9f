use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A native platform the expo-updates client runs on. `web` is never served updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Android,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::Ios, Platform::Android];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("platform must be \"ios\" or \"android\", got {0:?}")]
pub struct InvalidPlatform(pub String);

impl FromStr for Platform {
    type Err = InvalidPlatform;

    /// Exact, lower-case match: the client always sends `ios` or `android`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ios" => Ok(Platform::Ios),
            "android" => Ok(Platform::Android),
            other => Err(InvalidPlatform(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_native_platforms() {
        assert_eq!("ios".parse::<Platform>().unwrap(), Platform::Ios);
        assert_eq!("android".parse::<Platform>().unwrap(), Platform::Android);
        assert!("web".parse::<Platform>().is_err());
        assert!("IOS".parse::<Platform>().is_err());
        assert!("".parse::<Platform>().is_err());
    }
}
