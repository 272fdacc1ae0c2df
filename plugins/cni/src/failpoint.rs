//! Test failpoints: with `PLUMB_FAILPOINT=<step>` in the environment, a plugin fails right after that
//! step of ADD, so black-box tests can prove the undo stack leaves nothing behind at every step. A
//! comma-separated list names several steps (`port,rollback-host veth`: ADD fails after the port, and
//! undoing the host veth fails too). Unset (as on every real node), a failpoint is one environment
//! lookup.

use crate::error::{CniError, CniResult};

/// The variable naming the step to fail after.
pub const VAR: &str = "PLUMB_FAILPOINT";

/// Error code of an injected failure.
pub const CODE: u32 = 199;

/// Fails with code 199 when `PLUMB_FAILPOINT` names `step`.
pub fn check(step: &str) -> CniResult<()> {
    match std::env::var(VAR) {
        Ok(s) if s.split(',').any(|s| s == step) => Err(CniError::new(
            CODE,
            format!("injected failure after step {step:?} ({VAR})"),
        )),
        _ => Ok(()),
    }
}
