//! The hard bound on one plugin invocation. [`arm`] starts a watchdog thread; if the command is still
//! running when the bound passes, the watchdog prints a CNI error (code 11, "try again later") unless a
//! reply was already printed, and ends the process at once with `_exit`. The kernel then drops every
//! `flock` the process held (bridge lock, pool lock), and the plugins it delegated to die with it
//! (`PR_SET_PDEATHSIG`, see [`crate::delegate::die_with_parent`]). So no plugin holds a lock longer than
//! its bound, whatever it waits for (a lock, the Kubernetes API, a hung delegate).
//!
//! The bound is [`DEFAULT`] unless [`VAR`] says otherwise. A plugin that delegates passes its child a
//! shorter bound ([`for_child`]), so a hung delegate answers code 11 first and the caller still has time
//! to undo its own steps before its own bound.

use crate::error::{code, CniError};
use crate::version::Version;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The variable overriding the bound, in seconds (fractions allowed, e.g. `2.5`; at most 3600).
pub const VAR: &str = "PLUMB_DEADLINE_SECONDS";

/// The default bound: above the longest wait a default configuration has on one path (the bridge
/// lock, 60 s, then the IPAM pool lock, `lockTimeoutSeconds` 30 s, then the Kubernetes API,
/// `timeoutSeconds` 20 s), below the few minutes runtimes give a CNI call.
pub const DEFAULT: Duration = Duration::from_secs(150);

/// The longest bound [`VAR`] may set.
const MAX_SECS: f64 = 3600.0;

/// What a delegated plugin's bound leaves its caller for undoing its own steps (at most half the time left).
const CHILD_MARGIN: Duration = Duration::from_secs(5);

/// When the armed deadline expires, and its bound.
static DEADLINE: OnceLock<(Instant, Duration)> = OnceLock::new();

/// Who prints the one reply: nobody yet, the command, or the watchdog.
static REPLY: AtomicU8 = AtomicU8::new(NOBODY);
const NOBODY: u8 = 0;
const COMMAND: u8 = 1;
const WATCHDOG: u8 = 2;

/// Reads a bound from the value of [`VAR`] (`None`: unset, the default).
pub fn parse_bound(value: Option<&str>) -> Result<Duration, String> {
    let Some(v) = value else {
        return Ok(DEFAULT);
    };
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= MAX_SECS => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "{VAR}={v:?} is not a number of seconds from 0 to {MAX_SECS}; using the default of {} s",
            DEFAULT.as_secs()
        )),
    }
}

/// Starts the watchdog of this process for `plugin` running `command`; errors are written in
/// `version`. The bound is read from [`VAR`] (a bad value is reported on stderr and the default used).
/// Only the first call arms anything.
pub fn arm(plugin: &'static str, command: &str, version: Version) {
    let bound = parse_bound(std::env::var(VAR).ok().as_deref()).unwrap_or_else(|e| {
        eprintln!("{plugin}: {e}");
        DEFAULT
    });
    let at = Instant::now() + bound;
    if DEADLINE.set((at, bound)).is_err() {
        return;
    }
    let msg = CniError::new(
        code::TRY_AGAIN_LATER,
        format!(
            "{plugin} {command} ran past its bound of {} s ({VAR}) and stopped at once, which released its locks and stopped the plugins it delegated to; the runtime should retry (DEL, then ADD)",
            secs(bound)
        ),
    );
    let reply_json = msg.to_json(version.as_str());
    let reply = reply_json.to_string() + "\n";
    let note = format!("{plugin}: {}\n", msg.msg);
    let spawned = std::thread::Builder::new()
        .name("plumb-deadline".into())
        .spawn(move || {
            while let Some(left) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(left);
            }
            expire(&reply, &note, &reply_json)
        });
    if let Err(e) = spawned {
        eprintln!("{plugin}: cannot start the deadline watchdog: {e}");
    }
}

/// Time left before this process's deadline; `None` when no deadline is armed.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .get()
        .map(|(at, _)| at.saturating_duration_since(Instant::now()))
}

/// The bound to give a delegated plugin: the time left minus a margin for undoing this plugin's own
/// steps (at most half of what is left); `None` when no deadline is armed.
pub fn for_child() -> Option<Duration> {
    remaining().map(child_bound)
}

fn child_bound(left: Duration) -> Duration {
    left.saturating_sub(CHILD_MARGIN)
        .max(left / 2)
        .max(Duration::from_millis(1))
}

/// Claims the reply for the command. `false` means the watchdog has replied and is ending the process:
/// the caller must print nothing. Always `true` when no deadline is armed.
pub fn claim_reply() -> bool {
    DEADLINE.get().is_none()
        || match REPLY.compare_exchange(NOBODY, COMMAND, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => true,
            Err(who) => who == COMMAND,
        }
}

/// Waits for the watchdog to end the process (after [`claim_reply`] returned `false`).
pub fn wait_for_the_end() -> ! {
    loop {
        std::thread::park();
    }
}

fn expire(reply: &str, note: &str, reply_json: &serde_json::Value) -> ! {
    if REPLY
        .compare_exchange(NOBODY, WATCHDOG, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        write_all(1, reply.as_bytes());
        write_all(2, note.as_bytes());
        crate::log::finish_without_waiting(reply_json);
    } else {
        // The command is printing its reply: let it finish, but never wait on a stuck stdout forever.
        std::thread::sleep(Duration::from_secs(2));
    }
    // SAFETY: _exit ends the process without running destructors or atexit handlers, which is the
    // point: no lock guard may run (and block) after the bound. It has no other preconditions.
    unsafe { libc::_exit(1) }
}

/// Writes to a raw descriptor, bypassing std's stdout lock (the command's thread may hold it).
fn write_all(fd: libc::c_int, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice for its length; a bad fd only makes write fail.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n > 0 {
            buf = &buf[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        } else {
            return;
        }
    }
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.3}", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_comes_from_the_variable_within_limits() {
        assert_eq!(parse_bound(None), Ok(DEFAULT));
        assert_eq!(parse_bound(Some("2")), Ok(Duration::from_secs(2)));
        assert_eq!(parse_bound(Some(" 0.5 ")), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "3601", "NaN", "inf", "", "2s"] {
            let e = parse_bound(Some(bad)).unwrap_err();
            assert!(e.contains(VAR) && e.contains("150 s"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_child_gets_less_time_than_its_caller() {
        let s = Duration::from_secs;
        assert_eq!(child_bound(s(150)), s(145));
        assert_eq!(child_bound(s(6)), s(3));
        assert_eq!(child_bound(Duration::ZERO), Duration::from_millis(1));
        assert_eq!(secs(s(150)), "150");
        assert_eq!(secs(Duration::from_millis(1500)), "1.500");
    }

    #[test]
    fn without_a_deadline_the_command_always_replies() {
        assert!(remaining().is_none() && for_child().is_none());
        assert!(claim_reply() && claim_reply());
    }
}
