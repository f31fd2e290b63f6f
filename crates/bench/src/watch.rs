//! A client's map stream being read in the background: its merged view, byte counters, and the expectations the
//! coordinator registered, each stamped with the moment it first held.

use crate::client::MapStream;
use crate::view::{Expect, PeerView};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Counters shared by all watchers of a run.
#[derive(Debug, Default)]
pub struct Shared {
    /// Non-keep-alive bytes received by anyone; the coordinator waits for it to stop moving.
    pub activity: AtomicU64,
    /// Expectations registered and not yet met.
    pub outstanding: AtomicUsize,
}

/// An expectation and when it was met.
#[derive(Debug)]
pub struct Pending {
    /// Index of the change it belongs to.
    pub change: usize,
    /// The condition.
    pub expect: Expect,
    /// First moment it held.
    pub met_at: Option<Instant>,
}

/// What the reader task maintains.
#[derive(Debug, Default)]
pub struct WatchState {
    /// The merged view.
    pub view: PeerView,
    /// Bytes of non-keep-alive messages (length prefix plus payload as received).
    pub bytes: u64,
    /// Bytes of keep-alive messages, kept apart: servers send them on a timer, not because of a change.
    pub keepalive_bytes: u64,
    /// Registered expectations.
    pub pending: Vec<Pending>,
    /// Why the stream ended, if it did while the client was meant to be up.
    pub ended: Option<String>,
}

/// One client's watch.
#[derive(Debug)]
pub struct Watch {
    state: Mutex<WatchState>,
    shared: Arc<Shared>,
}

impl Watch {
    /// A watch whose view starts from the first message, already read.
    pub fn new(first: &crate::stream::Received, shared: Arc<Shared>) -> Arc<Watch> {
        let mut state = WatchState::default();
        state.view.apply(&first.message);
        state.bytes = first.wire_bytes;
        Arc::new(Watch { state: Mutex::new(state), shared })
    }

    /// Locks the state. A poisoned lock only means a reader panicked mid-update; the counters are still the best
    /// information there is.
    pub fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an expectation; one that already holds is met now.
    pub fn expect(&self, change: usize, expect: Expect) {
        let mut st = self.lock();
        let met_at = expect.met(&st.view).then(Instant::now);
        if met_at.is_none() {
            self.shared.outstanding.fetch_add(1, Ordering::Relaxed);
        }
        st.pending.push(Pending { change, expect, met_at });
    }

    /// Takes the registered expectations; unmet ones stop counting as outstanding.
    pub fn take_pending(&self) -> Vec<Pending> {
        let pending = std::mem::take(&mut self.lock().pending);
        let unmet = pending.iter().filter(|p| p.met_at.is_none()).count();
        self.shared.outstanding.fetch_sub(unmet, Ordering::Relaxed);
        pending
    }

    /// Reads the stream until it ends, applying every message.
    pub async fn run(self: Arc<Self>, mut stream: MapStream) {
        let end = loop {
            match stream.next().await {
                Ok(Some(m)) => {
                    let now = Instant::now();
                    let mut st = self.lock();
                    if m.message.keep_alive {
                        st.keepalive_bytes += m.wire_bytes;
                        continue;
                    }
                    st.bytes += m.wire_bytes;
                    self.shared.activity.fetch_add(m.wire_bytes, Ordering::Relaxed);
                    st.view.apply(&m.message);
                    let WatchState { view, pending, .. } = &mut *st;
                    for p in pending.iter_mut().filter(|p| p.met_at.is_none()) {
                        if p.expect.met(view) {
                            p.met_at = Some(now);
                            self.shared.outstanding.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(None) => break "the server ended the map stream".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        self.lock().ended = Some(end);
    }
}
