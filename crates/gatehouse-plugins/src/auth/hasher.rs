//! Password verification off the proxy workers. An argon2id check takes tens of
//! milliseconds of CPU; on a worker thread it stalls every other request that worker
//! serves (four clients sending wrong passwords took unrelated requests from 0.3 ms to over
//! 60 ms). Checks go to a small pool of dedicated threads through a bounded queue instead:
//! when the queue is full the request is refused at once (503), never queued without bound.
//!
//! Unknown users are checked against a dummy hash with the default parameters, so a
//! wrong password takes the same time whether or not the user exists.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use gatehouse_model::secret::{hash_password, verify_password};
use tokio::sync::oneshot;

/// Checks waiting for a thread, at most.
const QUEUE: usize = 64;

struct Job {
    password: String,
    /// The stored hash, or `None` for an unknown user (checked against the dummy hash).
    hash: Option<Arc<str>>,
    done: oneshot::Sender<bool>,
}

struct Pool {
    tx: SyncSender<Job>,
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        // Same algorithm and parameters as the hashes the gateway stores.
        hash_password("gatehouse-dummy-password-for-unknown-users").unwrap_or_default()
    })
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get() / 2)
            .max(1);
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("gatehouse-hash-{i}"))
                .spawn(move || loop {
                    let job = {
                        let Ok(rx) = rx.lock() else { return };
                        match rx.recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        }
                    };
                    let ok = match &job.hash {
                        Some(h) => verify_password(&job.password, h),
                        None => {
                            // The dummy check only spends the time; it never succeeds.
                            let _ = verify_password(&job.password, dummy_hash());
                            false
                        }
                    };
                    let _ = job.done.send(ok);
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-hashing thread");
            }
        }
        // Computed now rather than on the first unknown user's request.
        let _ = dummy_hash();
        Pool { tx }
    })
}

/// Why a password could not be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Every hashing thread is busy and the queue is full.
    Full,
}

/// Starts checking `password` against `hash` (`None`: unknown user) on the hashing pool.
/// The receiver resolves to the verdict (an error if the pool went away).
pub fn verify(password: String, hash: Option<Arc<str>>) -> Result<oneshot::Receiver<bool>, Busy> {
    let (done, rx) = oneshot::channel();
    match pool().tx.try_send(Job {
        password,
        hash,
        done,
    }) {
        Ok(()) => Ok(rx),
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(Busy::Full),
    }
}

/// Starts the pool (and computes the dummy hash) before the first request needs it.
pub fn warm_up() {
    let _ = pool();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_off_thread_and_unknown_users_fail() {
        let h: Arc<str> = hash_password("right").unwrap().into();
        assert!(verify("right".into(), Some(h.clone()))
            .unwrap()
            .await
            .unwrap());
        assert!(!verify("wrong".into(), Some(h)).unwrap().await.unwrap());
        assert!(!verify("right".into(), None).unwrap().await.unwrap());
    }
}
