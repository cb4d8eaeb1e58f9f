//! Request fields as typed values. Each parser refuses a bad value with the code and message
//! clients rely on (`invalid_channel`, ...). Handlers parse at the edge and hand the use-cases
//! typed values (a publish as `service::publish::Publish`); the one exception is a branch
//! rollout's action, whose branch and percentage only mean something once the channel's state
//! is read (a `set` on a channel without a rollout is refused for that, not for its percentage).

use aloft_core::halt::{Halt, HaltPolicy};
use aloft_core::{BranchName, ChannelName, RuntimeVersion};

use super::Error;

pub(crate) fn channel_name(name: &str) -> Result<ChannelName, Error> {
    ChannelName::parse(name).map_err(|e| Error::invalid("invalid_channel", e.to_string()))
}

pub(crate) fn branch_name(name: &str) -> Result<BranchName, Error> {
    BranchName::parse(name).map_err(|e| Error::invalid("invalid_branch", e.to_string()))
}

pub(crate) fn runtime_version(value: &str) -> Result<RuntimeVersion, Error> {
    RuntimeVersion::parse(value).map_err(|e| Error::invalid("invalid_runtime_version", e.to_string()))
}

/// A request's halt setting (`halt_policy`, `no_halt`): `None` when it gives none (the app's
/// policy then applies).
pub(crate) fn halt_setting(policy: Option<HaltPolicy>, no_halt: bool) -> Result<Option<Halt>, Error> {
    match (policy, no_halt) {
        (None, false) => Ok(None),
        (None, true) => Ok(Some(Halt::Off)),
        (Some(_), true) => Err(Error::invalid(
            "invalid_halt_policy",
            "give halt_policy or no_halt, not both",
        )),
        (Some(p), false) => p
            .validate()
            .map(|p| Some(Halt::Policy(p)))
            .map_err(|e| Error::invalid("invalid_halt_policy", format!("field `halt_policy`: {e}"))),
    }
}

/// A rollout's share of devices: 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Percentage(u8);

impl Percentage {
    pub(crate) fn new(value: u8) -> Result<Self, Error> {
        if value > 100 {
            return Err(Error::invalid("invalid_percentage", "a rollout percentage is 0 to 100"));
        }
        Ok(Self(value))
    }

    pub(crate) fn get(self) -> u8 {
        self.0
    }
}

/// Where a publish goes: the branch a channel points at, or a branch.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Channel(ChannelName),
    Branch(BranchName),
}

impl Target {
    /// Exactly one of `channel` and `branch`.
    pub(crate) fn parse(channel: Option<&str>, branch: Option<&str>) -> Result<Self, Error> {
        match (channel, branch) {
            (Some(c), None) => Ok(Self::Channel(channel_name(c)?)),
            (None, Some(b)) => Ok(Self::Branch(branch_name(b)?)),
            _ => Err(Error::invalid(
                "invalid_target",
                "give exactly one of channel or branch",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(err: Error) -> &'static str {
        match err {
            Error::Invalid { code, .. } => code,
            other => panic!("not a refusal of the request: {other}"),
        }
    }

    #[test]
    fn a_target_is_one_valid_channel_or_branch() {
        assert!(
            matches!(Target::parse(Some("production"), None), Ok(Target::Channel(c)) if c.as_str() == "production")
        );
        assert!(
            matches!(Target::parse(None, Some("release/1.2")), Ok(Target::Branch(b)) if b.as_str() == "release/1.2")
        );
        assert_eq!(code(Target::parse(Some("a b"), None).unwrap_err()), "invalid_channel");
        assert_eq!(code(Target::parse(None, Some("..")).unwrap_err()), "invalid_branch");
        assert_eq!(code(Target::parse(None, None).unwrap_err()), "invalid_target");
        assert_eq!(code(Target::parse(Some("a"), Some("b")).unwrap_err()), "invalid_target");
        assert_eq!(code(runtime_version("1 0").unwrap_err()), "invalid_runtime_version");
        assert_eq!(Percentage::new(100).unwrap().get(), 100);
        assert_eq!(code(Percentage::new(101).unwrap_err()), "invalid_percentage");
    }
}
