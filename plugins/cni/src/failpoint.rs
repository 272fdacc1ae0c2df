//! Test failpoints: with `PLUMB_FAILPOINT=<step>` in the environment, a plugin fails right after that
//! step of ADD, so black-box tests can prove the undo stack leaves nothing behind at every step. A
//! comma-separated list names several steps (`port,rollback-host veth`: ADD fails after the port, and
//! undoing the host veth fails too). Unset, a failpoint is one environment lookup.
//!
//! Only debug builds (`debug_assertions`, what `cargo build` and the conformance tests use: they run
//! `target/debug`) have failpoints. A release build, the one a user installs, compiles every
//! [`check`] to `Ok(())` and never reads `PLUMB_FAILPOINT`, so nothing in a node's environment can make
//! a plugin fail on purpose.

use crate::error::{CniError, CniResult};

/// The variable naming the step to fail after.
pub const VAR: &str = "PLUMB_FAILPOINT";

/// Error code of an injected failure.
pub const CODE: u32 = 199;

/// Whether this build has failpoints: debug builds only.
pub const ENABLED: bool = cfg!(debug_assertions);

/// Fails with code 199 when `PLUMB_FAILPOINT` names `step` (debug builds only, see [`ENABLED`]).
#[inline]
pub fn check(step: &str) -> CniResult<()> {
    if !ENABLED {
        return Ok(());
    }
    match std::env::var(VAR) {
        Ok(s) if injected(&s, step) => Err(CniError::new(
            CODE,
            format!("injected failure after step {step:?} ({VAR})"),
        )),
        _ => Ok(()),
    }
}

/// Whether the failpoint setting `setting` fails `step`, in this build.
fn injected(setting: &str, step: &str) -> bool {
    ENABLED && setting.split(',').any(|s| s == step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_step_fails_only_in_a_debug_build() {
        let setting = "port,rollback-host veth";
        assert_eq!(injected(setting, "port"), cfg!(debug_assertions));
        assert_eq!(
            injected(setting, "rollback-host veth"),
            cfg!(debug_assertions)
        );
        assert!(!injected(setting, "veth"), "an unlisted step never fails");
        assert!(!injected(setting, "rollback-host"), "steps match whole");
        assert!(!injected("", "port"));
    }
}
