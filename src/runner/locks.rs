//! Which cases may run beside which, per model group.
//!
//! Faults are scoped to a case's tag, but their consequences are not: LiteLLM cools down a
//! failing *deployment* for everyone, and counts failures per deployment per minute. A case
//! that sends traffic to a group holds that group shared; a case that makes a group fail (or
//! needs it undisturbed, like the distribution case) holds it exclusively, and before letting
//! go waits, bounded, until none of the group's deployments is cooling down any more — read
//! from the router's own cooldown keys in Redis (`deployment:<id>:cooldown`), not guessed.
//!
//! The locks are files (`flock`), so they hold across the processes nextest runs cases in as
//! well as across the threads of one run. Every case takes all its locks at once, in name
//! order, so two cases can never wait for each other.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a case waits for its groups before it fails saying which one it waited for.
const WAIT_BOUND: Duration = Duration::from_secs(600);

/// The groups a case touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// Sends ordinary traffic to these.
    pub uses: Vec<String>,
    /// Makes these fail: exclusive where LiteLLM can cool the group down (the failures then
    /// reach other cases), shared where it cannot.
    pub breaks: Vec<String>,
    /// Needs these to itself whatever the config (a case counting where traffic goes).
    pub owns: Vec<String>,
}

impl Claims {
    /// The groups held exclusively, given which groups can cool down.
    pub fn exclusive(&self, can_cool_down: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out: Vec<String> = self.owns.clone();
        out.extend(self.breaks.iter().filter(|g| can_cool_down(g)).cloned());
        out.sort();
        out.dedup();
        out
    }

    /// Resolves `breaks` into exclusive or shared claims.
    pub fn resolve(&self, can_cool_down: impl Fn(&str) -> bool) -> Claims {
        let owns = self.exclusive(&can_cool_down);
        let mut uses: Vec<String> = self
            .uses
            .iter()
            .chain(&self.breaks)
            .filter(|g| !owns.contains(g))
            .cloned()
            .collect();
        uses.sort();
        uses.dedup();
        Claims {
            uses,
            breaks: Vec::new(),
            owns,
        }
    }
}

/// Held locks; released on drop.
pub struct Held {
    _files: Vec<File>,
}

/// Where a stack's lock files live.
#[derive(Debug, Clone)]
pub struct Locks {
    dir: PathBuf,
}

impl Locks {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_owned() })
    }

    fn file(&self, group: &str, kind: &str) -> std::io::Result<File> {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(format!("{}.{kind}", slug(group))))
    }

    /// Takes every lock of `claims` (blocking; call from a blocking thread), bounded.
    ///
    /// Writers are preferred: `flock` alone would let a stream of cases sending ordinary
    /// traffic to a group keep a case that needs it exclusively waiting for ever (seen: ten
    /// minutes on a config whose busiest group every chain ran through). So each group has a
    /// gate beside its lock: a writer holds the gate exclusively while it waits for the lock,
    /// and a reader passes through the gate (shared, released at once) before taking the lock
    /// shared — readers arriving after a waiting writer queue behind it. Groups are taken in
    /// name order and a gate is held only while taking its own group's lock, so every wait
    /// points to a later group and none can go round in a circle.
    pub fn acquire(&self, claims: &Claims) -> anyhow::Result<Held> {
        let mut all: Vec<(&str, bool)> = claims
            .owns
            .iter()
            .map(|g| (g.as_str(), true))
            .chain(
                claims
                    .uses
                    .iter()
                    .filter(|g| !claims.owns.contains(g))
                    .map(|g| (g.as_str(), false)),
            )
            .collect();
        all.sort();
        all.dedup_by(|a, b| a.0 == b.0);
        let start = Instant::now();
        let wait = |f: &File, exclusive: bool, group: &str| -> anyhow::Result<()> {
            loop {
                let r = if exclusive { f.try_lock() } else { f.try_lock_shared() };
                match r {
                    Ok(()) => return Ok(()),
                    Err(TryLockError::WouldBlock) if start.elapsed() < WAIT_BOUND => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(TryLockError::WouldBlock) => anyhow::bail!(
                        "waited {}s for model group {group}, held by other cases",
                        start.elapsed().as_secs()
                    ),
                    Err(TryLockError::Error(e)) => return Err(e.into()),
                }
            }
        };
        let mut files = Vec::new();
        for (group, exclusive) in all {
            let gate = self.file(group, "gate")?;
            let lock = self.file(group, "lock")?;
            wait(&gate, exclusive, group)?;
            wait(&lock, exclusive, group)?;
            gate.unlock()?;
            files.push(lock);
        }
        Ok(Held { _files: files })
    }
}

/// A group's lock-file name: readable (its safe characters, shortened) and one per group
/// name — the hash of the exact name tells apart `gpt-4.1` and `gpt-4_1`, which must not share
/// a file: a case claiming both would otherwise wait on its own lock until the wait bound.
fn slug(group: &str) -> String {
    use sha2::{Digest, Sha256};
    let safe: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let digest = Sha256::digest(group.as_bytes());
    format!("{safe}-{}", hex::encode(&digest[..8]))
}

/// Waits until none of `deployment_ids` is cooling down in the router's Redis, bounded by
/// `bound`. Returns how long it waited.
pub async fn drain_cooldowns(redis: &str, deployment_ids: &[String], bound: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let mut longest: i64 = -2;
        for id in deployment_ids {
            let ms = crate::stack::health::redis_pttl(redis, &format!("deployment:{id}:cooldown")).await?;
            longest = longest.max(ms);
        }
        // -2: no such key; -1: a key without expiry (not LiteLLM's, never ours to wait for).
        if longest < 0 {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < bound,
            "a deployment was still cooling down {:.0}s after the case ended ({}ms left)",
            start.elapsed().as_secs_f64(),
            longest
        );
        tokio::time::sleep(Duration::from_millis((longest as u64).clamp(10, 250))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_shared_and_shared_shares() {
        let dir = std::env::temp_dir().join(format!("gauntlet-locks-{}", crate::random::random_hex(4)));
        let locks = Locks::new(&dir).unwrap();
        let reader = |g: &str| Claims {
            uses: vec![g.into()],
            ..Claims::default()
        };
        let a1 = locks.acquire(&reader("a")).unwrap();
        let _a2 = locks.acquire(&reader("a")).unwrap();
        // A writer cannot get in while readers hold the group: try it on a thread and see it
        // is still waiting while they hold it, and done once they let go.
        let l2 = locks.clone();
        let writer = std::thread::spawn(move || {
            l2.acquire(&Claims {
                owns: vec!["a".into()],
                ..Claims::default()
            })
            .map(|_| Instant::now())
        });
        std::thread::sleep(Duration::from_millis(150));
        assert!(!writer.is_finished(), "an exclusive claim got in beside shared ones");
        let released = Instant::now();
        drop(a1);
        drop(_a2);
        let got = writer.join().unwrap().unwrap();
        assert!(got >= released);
        // A reader arriving while a writer waits queues behind the writer.
        let r1 = locks.acquire(&reader("b")).unwrap();
        let (l3, l4) = (locks.clone(), locks.clone());
        let w = std::thread::spawn(move || {
            let held = l3
                .acquire(&Claims {
                    owns: vec!["b".into()],
                    ..Claims::default()
                })
                .unwrap();
            let at = Instant::now();
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
            at
        });
        let gate = locks.file("b", "gate").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while gate.try_lock_shared().is_ok() {
            gate.unlock().unwrap();
            assert!(Instant::now() < deadline, "the writer never queued");
            std::thread::sleep(Duration::from_millis(5));
        }
        let r2 = std::thread::spawn(move || l4.acquire(&reader("b")).map(|_| Instant::now()));
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            !r2.is_finished() && !w.is_finished(),
            "a late reader passed a waiting writer"
        );
        drop(r1);
        let (wrote, read) = (w.join().unwrap(), r2.join().unwrap().unwrap());
        assert!(read > wrote, "the late reader got in before the writer");
        // Breaking a group that cannot cool down shares it; one that can, owns it.
        let c = Claims {
            breaks: vec!["lone".into(), "pair".into()],
            ..Claims::default()
        }
        .resolve(|g| g == "pair");
        assert_eq!((c.uses, c.owns), (vec!["lone".to_owned()], vec!["pair".to_owned()]));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The old mapping turned every unsafe character into `_`: `gpt-4.1` and `gpt-4_1` shared
    /// one file, and a case owning one and using the other waited on itself until the bound.
    #[test]
    fn distinct_groups_never_share_a_lock_file() {
        assert_ne!(slug("gpt-4.1"), slug("gpt-4_1"));
        assert_ne!(slug("a/b"), slug("a:b"));
        assert_eq!(slug("gpt-4.1"), slug("gpt-4.1"));
        assert!(slug("gpt-4.1").starts_with("gpt-4_1-"), "{}", slug("gpt-4.1"));
        assert!(slug(&"x".repeat(500)).len() < 100);
        let dir = std::env::temp_dir().join(format!("gauntlet-locks-{}", crate::random::random_hex(4)));
        let locks = Locks::new(&dir).unwrap();
        let claims = Claims {
            uses: vec!["gpt-4_1".into()],
            owns: vec!["gpt-4.1".into()],
            ..Claims::default()
        };
        let l = locks.clone();
        let t = std::thread::spawn(move || l.acquire(&claims).map(drop));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.is_finished() {
            assert!(Instant::now() < deadline, "a case waited on its own lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().unwrap().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
