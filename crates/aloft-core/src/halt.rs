//! Self-halting rollouts: when a rolled-out update fails on too many devices, the rollout stops
//! itself. The decision is here, pure; the server gathers the figures and acts on it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// When a rollout halts: on a platform where at least `min_devices` devices installed the
/// rolled-out update, its failure rate exceeds `failure_rate` percent (and the control's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaltPolicy {
    /// Percent of devices, 0 to 100: failures / (launches + failures).
    #[schemars(range(min = 0, max = 100))]
    pub failure_rate: f64,
    /// Devices that must have installed the update on a platform before its rate counts.
    #[schemars(range(min = 1))]
    pub min_devices: u64,
}

/// The built-in policy, for rollouts and apps that set none: more than 5 % of devices failing,
/// once 50 have installed it. A launch that fails is rare for a healthy bundle (the client only
/// reports a failure when the update crashed before its first render, §8.4), so 5 % is far
/// above noise, and 50 devices keep a single unlucky device from deciding.
pub const DEFAULT_POLICY: HaltPolicy = HaltPolicy {
    failure_rate: 5.0,
    min_devices: 50,
};

/// A rollout's halt setting as stored: off, or a policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Halt {
    Off,
    Policy(HaltPolicy),
}

/// Why a policy is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the failure rate must be a percentage from 0 to 100")]
    FailureRate,
    #[error("the minimum number of devices must be at least 1")]
    MinDevices,
}

impl HaltPolicy {
    pub fn validate(self) -> Result<Self, PolicyError> {
        if !(0.0..=100.0).contains(&self.failure_rate) || self.failure_rate.is_nan() {
            return Err(PolicyError::FailureRate);
        }
        if self.min_devices == 0 {
            return Err(PolicyError::MinDevices);
        }
        Ok(self)
    }
}

impl Halt {
    /// The stored text: `off`, or the policy as JSON.
    pub fn to_stored(self) -> String {
        match self {
            Halt::Off => "off".to_owned(),
            Halt::Policy(p) => serde_json::to_string(&p).unwrap_or_else(|_| "off".to_owned()),
        }
    }

    /// Reads a stored setting; `None` for text that is neither (never written by Aloft).
    pub fn from_stored(text: &str) -> Option<Self> {
        if text == "off" {
            return Some(Halt::Off);
        }
        serde_json::from_str::<HaltPolicy>(text).ok().map(Halt::Policy)
    }

    /// The setting in force: the rollout's own, else the app's, else [`DEFAULT_POLICY`].
    pub fn resolve(rollout: Option<&str>, app: Option<&str>) -> Self {
        rollout
            .and_then(Self::from_stored)
            .or_else(|| app.and_then(Self::from_stored))
            .unwrap_or(Halt::Policy(DEFAULT_POLICY))
    }
}

/// Distinct devices that did something with one update on one platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub installs: u64,
    pub launches: u64,
    pub failures: u64,
}

impl Figures {
    /// failures / (launches + failures), in percent; `None` before any device reported.
    pub fn failure_rate(&self) -> Option<f64> {
        let seen = self.launches + self.failures;
        (seen > 0).then(|| self.failures as f64 * 100.0 / seen as f64)
    }
}

/// Whether a rollout whose update shows `rolled` (against `control`, the update devices outside
/// the rollout get, when there is one) must halt under `policy`.
pub fn should_halt(policy: &HaltPolicy, rolled: &Figures, control: Option<&Figures>) -> bool {
    if rolled.installs < policy.min_devices {
        return false;
    }
    let Some(rate) = rolled.failure_rate() else {
        return false;
    };
    let control_rate = control.and_then(Figures::failure_rate).unwrap_or(0.0);
    rate > policy.failure_rate && rate > control_rate
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: HaltPolicy = HaltPolicy {
        failure_rate: 10.0,
        min_devices: 100,
    };

    fn figures(installs: u64, launches: u64, failures: u64) -> Figures {
        Figures {
            installs,
            launches,
            failures,
        }
    }

    #[test]
    fn halts_past_the_threshold_only_with_enough_devices() {
        assert!(!should_halt(&POLICY, &figures(99, 50, 49), None));
        assert!(should_halt(&POLICY, &figures(100, 80, 20), None));
        // Exactly at the threshold is not past it.
        assert!(!should_halt(&POLICY, &figures(100, 90, 10), None));
        // The control fails as often: the update is not the cause.
        assert!(!should_halt(&POLICY, &figures(100, 80, 20), Some(&figures(0, 70, 30))));
        assert!(should_halt(&POLICY, &figures(100, 80, 20), Some(&figures(0, 95, 5))));
        assert!(!should_halt(&POLICY, &figures(500, 0, 0), None));
    }

    #[test]
    fn settings_are_stored_and_resolved() {
        for halt in [Halt::Off, Halt::Policy(POLICY)] {
            assert_eq!(Halt::from_stored(&halt.to_stored()), Some(halt));
        }
        let own = Halt::Policy(POLICY).to_stored();
        assert_eq!(Halt::resolve(Some(&own), Some("off")), Halt::Policy(POLICY));
        assert_eq!(Halt::resolve(None, Some("off")), Halt::Off);
        assert_eq!(Halt::resolve(None, None), Halt::Policy(DEFAULT_POLICY));
        assert!(POLICY.validate().is_ok());
        assert!(
            HaltPolicy {
                failure_rate: 100.5,
                ..POLICY
            }
            .validate()
            .is_err()
        );
        assert!(
            HaltPolicy {
                min_devices: 0,
                ..POLICY
            }
            .validate()
            .is_err()
        );
    }

    proptest! {
        /// More failures never turn a halt off, more launches never turn one on, and no update
        /// below the minimum, at or under the threshold, or failing no more than its control
        /// ever halts.
        #[test]
        fn the_decision_is_monotone_and_respects_every_bound(
            rate in 0.0f64..100.0,
            min in 1u64..1000,
            installs in 0u64..2000,
            launches in 0u64..2000,
            failures in 0u64..2000,
            more in 1u64..500,
            control_launches in 0u64..2000,
            control_failures in 0u64..2000,
        ) {
            let policy = HaltPolicy { failure_rate: rate, min_devices: min };
            let rolled = figures(installs, launches, failures);
            let control = figures(0, control_launches, control_failures);
            let halts = should_halt(&policy, &rolled, Some(&control));
            if halts {
                prop_assert!(should_halt(&policy, &figures(installs, launches, failures + more), Some(&control)));
                prop_assert!(installs >= min);
                let r = rolled.failure_rate().unwrap();
                prop_assert!(r > rate);
                prop_assert!(r > control.failure_rate().unwrap_or(0.0));
            } else {
                prop_assert!(!should_halt(&policy, &figures(installs, launches + more, failures), Some(&control)));
            }
        }
    }
}
