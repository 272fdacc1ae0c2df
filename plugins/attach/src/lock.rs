//! The per-bridge lock every plugin attaching to a bridge shares, and its GC sweep.

use plumb_cni::CniResult;
use plumb_net::link;
use plumb_net::nl::Route;
use std::time::Duration;

/// How long ADD and DEL wait for the per-bridge lock ([`lock_bridge`]) and other shared locks.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Takes the per-bridge lock every plugin attaching to bridge `name` shares (plumb-bridge, plumb-vxlan),
/// so the create-or-verify of the bridge and its shared ports never races. On release the lock file is
/// removed when no bridge of that name exists (a refused ADD, the DEL after the bridge went), so lock
/// files do not pile up: one netlink lookup, made while the lock is still held.
pub fn lock_bridge(name: &str) -> CniResult<plumb_cni::lock::LockGuard> {
    let bridge = name.to_string();
    let still_there = move || {
        Route::open()
            .map(|mut nl| is_bridge(&mut nl, &bridge))
            .unwrap_or(true)
    };
    Ok(
        plumb_cni::lock::lock_resource(&format!("bridge-{name}"), LOCK_TIMEOUT)?
            .remove_on_release_unless(still_there),
    )
}

/// Whether a bridge `name` exists; when the lookup fails, true (removing a lock file is only tidying).
fn is_bridge(nl: &mut Route, name: &str) -> bool {
    link::by_name(nl, name).map_or(true, |l| {
        l.is_some_and(|l| l.kind.as_deref() == Some("bridge"))
    })
}

/// For GC: removes the lock file of every bridge that went outside plumb (an operator deleted it, its
/// namespace went), which no DEL would take any more. Held files are skipped without waiting, so GC
/// never waits on an ADD or DEL. Only tidying: a failure is logged, and GC goes on.
pub fn sweep_bridge_locks(plugin: &str) {
    let mut nl = match Route::open() {
        Ok(nl) => nl,
        Err(e) => {
            eprintln!("{plugin}: GC: cannot open a netlink socket to sweep bridge lock files: {e}");
            return;
        }
    };
    match plumb_cni::lock::sweep_resources("bridge-", |name| is_bridge(&mut nl, name)) {
        Ok(0) => {}
        Ok(n) => eprintln!("{plugin}: GC: removed {n} lock file(s) of bridges that are gone"),
        Err(e) => eprintln!("{plugin}: GC: cannot sweep the bridge lock files: {e}"),
    }
}
