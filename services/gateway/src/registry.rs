//! Which kiosk links this process holds, by kiosk. The map holds handles (a wake-up signal and a
//! "you are replaced" token), never session state: each session is a task that owns its own.
//! A new link of a kiosk replaces the old one explicitly, so a kiosk has one session here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How other parts of the gateway reach one session.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    /// The session's id.
    pub session_id: String,
    /// Wakes the session to look for undelivered commands.
    pub wake: Arc<Notify>,
    /// Cancelled when the session is no longer its kiosk's online link: a newer link took
    /// over (here, or on another replica: the liveness flush finds the kiosk's row naming
    /// another session), or the kiosk was marked offline meanwhile. The session then tells
    /// its kiosk to reconnect.
    pub replaced: CancellationToken,
    /// The highest command seq put on this link: commands are delivered in seq order, and a
    /// SENT command is resent only on a new link (which starts from 0). The replica's poll
    /// ([`crate::poll`]) wakes the session only for a command past it.
    delivered_through: Arc<AtomicI64>,
}

impl SessionHandle {
    /// A handle for a new session.
    pub fn new(session_id: String) -> Self {
        Self {
            session_id,
            wake: Arc::new(Notify::new()),
            replaced: CancellationToken::new(),
            delivered_through: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The highest command seq put on this link so far (0: none).
    pub fn delivered_through(&self) -> i64 {
        self.delivered_through.load(Ordering::Relaxed)
    }

    /// Notes that command `seq` was put on this link (or passed over: acked or expired).
    pub fn delivered(&self, seq: i64) {
        self.delivered_through.fetch_max(seq, Ordering::Relaxed);
    }
}

/// The sessions of this process. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    sessions: Arc<Mutex<HashMap<String, SessionHandle>>>,
    open_locks: Arc<[tokio::sync::Mutex<()>]>,
}

/// How many locks opens are striped over.
pub const OPEN_STRIPES: usize = 64;

impl Default for Registry {
    fn default() -> Self {
        Self {
            sessions: Arc::default(),
            open_locks: (0..OPEN_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

impl Registry {
    /// Makes `handle` the kiosk's session; the session it replaces, if any, is told to close.
    /// Callers hold [`Registry::opening`] for the kiosk across recording the session in the
    /// database and this claim, so both see opens in the same order (the last one wins).
    pub fn claim(&self, kiosk_id: &str, handle: SessionHandle) {
        let previous = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kiosk_id.to_owned(), handle);
        if let Some(previous) = previous {
            previous.replaced.cancel();
        }
    }

    /// Serialises opens of one kiosk's link in this process (striped: kiosks share
    /// [`OPEN_STRIPES`] locks, so a reconnect storm still opens many links at once).
    pub async fn opening(&self, kiosk_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(kiosk_id, &mut hasher);
        let stripe = (std::hash::Hasher::finish(&hasher) % OPEN_STRIPES as u64) as usize;
        self.open_locks[stripe].lock().await
    }

    /// Removes the kiosk's session if it is still `session_id` (a replaced session removes
    /// nothing). Returns whether it did.
    pub fn release(&self, kiosk_id: &str, session_id: &str) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions
            .get(kiosk_id)
            .is_some_and(|h| h.session_id == session_id)
        {
            sessions.remove(kiosk_id);
            true
        } else {
            false
        }
    }

    /// Wakes the kiosk's session, if this process holds one. Returns whether it does.
    pub fn wake(&self, kiosk_id: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(kiosk_id) {
            Some(handle) => {
                handle.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Every link this process holds now: (device key, its session).
    pub fn held(&self) -> Vec<(String, SessionHandle)> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(kiosk, handle)| (kiosk.clone(), handle.clone()))
            .collect()
    }

    /// Whether this process holds the kiosk's link with session `session_id`.
    pub fn holds(&self, kiosk_id: &str, session_id: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(kiosk_id)
            .is_some_and(|h| h.session_id == session_id)
    }

    /// How many links this process holds.
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether this process holds no link.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_replaces_the_old_one_and_only_the_current_one_releases() {
        let registry = Registry::default();
        let old = SessionHandle::new("s1".into());
        registry.claim("K-1", old.clone());
        let new = SessionHandle::new("s2".into());
        registry.claim("K-1", new.clone());
        assert!(
            old.replaced.is_cancelled(),
            "the old session is told to close"
        );
        assert!(!new.replaced.is_cancelled());
        assert!(
            !registry.release("K-1", "s1"),
            "a replaced session removes nothing"
        );
        assert_eq!(registry.len(), 1);
        assert!(registry.holds("K-1", "s2"));
        assert!(
            !registry.holds("K-1", "s1"),
            "a replaced session is not held"
        );
        assert_eq!(registry.held().len(), 1);
        assert!(registry.wake("K-1"));
        assert!(registry.release("K-1", "s2"));
        assert!(!registry.wake("K-1"));
    }
}
