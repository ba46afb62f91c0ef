//! The run lock (`<output>/_lock`): one run at a time per output root.

use serde::{Deserialize, Serialize};
use tailforge_core::hash::sha256_hex;
use tailforge_core::{Error, Location, Result};
use tracing::warn;

use crate::manifest::now;

/// The run lock: a conditional create of `<output>/_lock`.
///
/// The lock records who holds it: run id, pid, host, the process's start
/// time (so a reused pid is not mistaken for the holder) and the host's boot
/// id. A run that finds the lock held takes it over, with a warning, when
/// - the holder ran on this host and is gone (no such pid, another process
///   under that pid, or the host rebooted since): a run killed with
///   `kill -9`, by the OOM killer or a power cut leaves its lock behind, and
///   the scheduler's retry must not be blocked for hours by it;
/// - or the lock is older than `--stale-lock-after` (the only way for a
///   lock of another host, whose processes this one cannot see).
///
/// Otherwise the run stops with an error naming the holder. Two runs taking
/// over the same dead lock at once are serialized by a second conditional
/// create (`_lock.takeover-<hash of the dead lock>`): only its creator
/// deletes the dead lock (if it still is the one judged dead), then both
/// race for `_lock` again, which one wins; the marker goes right after that
/// race. A run killed in between leaves its marker, which the next run on
/// the host removes (its creator is gone).
pub(crate) struct Lock {
    location: Location,
}

#[derive(Serialize, Deserialize)]
struct LockInfo {
    run_id: String,
    pid: u32,
    host: String,
    acquired_at: f64,
    /// Start time of the process `pid` (clock ticks after boot, field 22 of
    /// `/proc/<pid>/stat`); absent in locks of older versions or off Linux.
    #[serde(default)]
    pid_start: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` of the host when the lock was taken.
    #[serde(default)]
    boot_id: Option<String>,
}

/// This host's name: the kernel's (what `hostname` prints), else `$HOSTNAME`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|b| b.trim().to_string())
}

/// Start time of process `pid` in clock ticks after boot, from
/// `/proc/<pid>/stat`; None if there is no such process (or no /proc).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: count the fields after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Why the holder of `held` is certainly gone, if it ran on this host and is;
/// None when it may still be running (or this host cannot tell).
fn holder_is_gone(held: &LockInfo) -> Option<String> {
    let host = host_name();
    if host == "unknown" || held.host != host || !std::path::Path::new("/proc/self/stat").exists() {
        return None;
    }
    if let (Some(theirs), Some(ours)) = (&held.boot_id, boot_id())
        && *theirs != ours
    {
        return Some(format!("host {host} rebooted since the lock was taken"));
    }
    match process_start(held.pid) {
        None => Some(format!("no process {} on {host}", held.pid)),
        Some(start) if held.pid_start.is_some_and(|s| s != start) => {
            Some(format!("process {} on {host} is another process than the lock's", held.pid))
        }
        Some(_) => None,
    }
}

impl Lock {
    pub(crate) async fn acquire(root: &Location, run_id: &str, stale_after_s: u64) -> Result<Lock> {
        let location = root.join("_lock");
        let pid = std::process::id();
        let info = LockInfo {
            run_id: run_id.to_string(),
            pid,
            host: host_name(),
            acquired_at: now(),
            pid_start: process_start(pid),
            boot_id: boot_id(),
        };
        let body = serde_json::to_vec(&info).map_err(|e| Error::internal(e.to_string()))?;
        let mut takeover: Option<Location> = None;
        for _ in 0..4 {
            let won = location.put_if_absent(body.clone()).await;
            // Once the dead lock is gone and `_lock` was raced for, the marker
            // has done its work: a run that read the dead lock before now
            // finds another lock than the one it judged, and leaves it.
            if let Some(marker) = takeover.take()
                && let Err(e) = marker.delete_if_exists().await
            {
                warn!(error = %e, "could not remove the lock takeover marker");
            }
            if won? {
                return Ok(Lock { location });
            }
            let held_bytes = match location.get().await {
                Ok(bytes) => bytes,
                // Released between our create and our read: try again.
                Err(_) => continue,
            };
            let held: Option<LockInfo> = serde_json::from_slice(&held_bytes).ok();
            let age = held.as_ref().map(|h| now() - h.acquired_at).unwrap_or(f64::INFINITY);
            let gone = held.as_ref().and_then(holder_is_gone);
            let Some(why) = gone.or_else(|| {
                (age >= stale_after_s as f64)
                    .then(|| format!("older than --stale-lock-after {stale_after_s} s ({age:.0} s)"))
            }) else {
                // Checked above: only a parsed lock has a finite age.
                let h = held.ok_or_else(|| Error::internal("unparsed lock counted as fresh"))?;
                return Err(Error::storage(
                    location.display(),
                    format!(
                        "another run holds the lock (run {}, pid {} on {}, for {:.0} s); wait for it to finish. \
                         A dead run's lock is taken over by the next run on the same host, or after \
                         --stale-lock-after seconds (now {stale_after_s}) from any host; remove it by hand \
                         only if you know that run is gone",
                        h.run_id, h.pid, h.host, age
                    ),
                ));
            };
            let marker = root.join(&format!("_lock.takeover-{}", &sha256_hex(&held_bytes)[..16]));
            if !marker.put_if_absent(body.clone()).await? {
                // Another run is taking over this very lock: look again. If
                // that run died in the middle of it, its marker goes too.
                if let Ok(bytes) = marker.get().await
                    && let Some(taker) =
                        serde_json::from_slice::<LockInfo>(&bytes).ok().as_ref().and_then(holder_is_gone)
                {
                    warn!(marker = %marker.display(), reason = %taker, "removing the takeover marker of a dead run");
                    marker.delete_if_exists().await?;
                }
                continue;
            }
            // Delete only the lock we judged: it may have changed hands since.
            if location.get().await.ok().as_deref() == Some(&held_bytes[..]) {
                let (held_run, held_pid, held_host) =
                    held.as_ref().map(|h| (h.run_id.as_str(), h.pid, h.host.as_str())).unwrap_or(("?", 0, "?"));
                warn!(
                    lock = %location.display(),
                    run = held_run,
                    pid = held_pid,
                    host = held_host,
                    reason = %why,
                    "taking over the run lock of a dead or stale run"
                );
                location.delete_if_exists().await?;
            }
            takeover = Some(marker);
        }
        if let Some(marker) = takeover {
            let _ = marker.delete_if_exists().await;
        }
        Err(Error::storage(
            location.display(),
            "could not take the run lock: other runs keep taking it; run one at a time",
        ))
    }

    pub(crate) async fn release(self) {
        if let Err(e) = self.location.delete_if_exists().await {
            warn!(error = %e, "could not release the run lock");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_lock_refuses_a_second_run_and_a_stale_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let first = Lock::acquire(&root, "a", 3600).await.unwrap();
        let err = Lock::acquire(&root, "b", 3600).await.err().expect("second run refused");
        assert!(err.to_string().contains("another run holds the lock (run a"), "{err}");
        // With a zero staleness bound the held lock counts as stale and is taken over.
        let second = Lock::acquire(&root, "c", 0).await.unwrap();
        second.release().await;
        drop(first);
        assert!(!root.join("_lock").exists().await.unwrap());
    }

    fn lock_file(root: &std::path::Path, pid: u32, host: &str, pid_start: Option<u64>) {
        let info = LockInfo {
            run_id: "dead".into(),
            pid,
            host: host.into(),
            acquired_at: now(),
            pid_start,
            boot_id: boot_id(),
        };
        std::fs::write(root.join("_lock"), serde_json::to_vec(&info).unwrap()).unwrap();
    }

    #[tokio::test]
    async fn the_lock_of_a_dead_process_on_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(dir.path().to_str().unwrap()).unwrap();
        // A process that has exited: its pid is (for now) nobody's.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        lock_file(dir.path(), dead, &host_name(), Some(1));
        let lock = Lock::acquire(&root, "next", 3600).await.expect("a dead holder's lock is taken over");
        let held: LockInfo = serde_json::from_slice(&root.join("_lock").get().await.unwrap()).unwrap();
        assert_eq!((held.run_id.as_str(), held.pid), ("next", std::process::id()));
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, ["_lock"], "no takeover marker is left");
        lock.release().await;
        assert!(!root.join("_lock").exists().await.unwrap());

        // The marker of a run killed in the middle of a takeover (its creator
        // is dead) does not block the next one.
        lock_file(dir.path(), dead, &host_name(), Some(1));
        let hash = sha256_hex(&std::fs::read(dir.path().join("_lock")).unwrap());
        let marker = dir.path().join(format!("_lock.takeover-{}", &hash[..16]));
        let taker = LockInfo {
            run_id: "killed".into(),
            pid: dead,
            host: host_name(),
            acquired_at: now(),
            pid_start: None,
            boot_id: None,
        };
        std::fs::write(&marker, serde_json::to_vec(&taker).unwrap()).unwrap();
        Lock::acquire(&root, "next", 3600).await.expect("a dead taker's marker is removed").release().await;
        assert!(!marker.exists());

        // A live holder (this very process) keeps its lock...
        let me = std::process::id();
        lock_file(dir.path(), me, &host_name(), process_start(me));
        let err = Lock::acquire(&root, "next", 3600).await.err().expect("a live holder keeps the lock");
        assert!(err.to_string().contains("another run holds the lock (run dead, pid"), "{err}");
        // ...but not a pid that now belongs to another process (other start time).
        lock_file(dir.path(), me, &host_name(), process_start(me).map(|s| s + 1));
        Lock::acquire(&root, "next", 3600).await.expect("a reused pid is not the holder").release().await;
        // A lock of another host cannot be judged from here: only its age counts.
        lock_file(dir.path(), dead, "some-other-host", None);
        assert!(Lock::acquire(&root, "next", 3600).await.is_err());
        Lock::acquire(&root, "next", 0).await.expect("stale by age").release().await;
    }

    #[test]
    fn process_start_reads_the_stat_line_after_the_command_name() {
        let me = process_start(std::process::id()).expect("this process has a start time");
        assert!(me > 0);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(process_start(pid), None, "a reaped process has no /proc entry");
    }
}
