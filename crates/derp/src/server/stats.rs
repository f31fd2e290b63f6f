//! Relay counters, readable by callers while the server runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a [`crate::DerpServer`]. Each field is updated with relaxed atomics; read them
/// directly or take a [`DerpStatsSnapshot`].
#[derive(Debug, Default)]
pub struct DerpStats {
    /// Clients currently connected (admitted, registered, not yet gone). A key connected twice
    /// counts twice.
    pub clients_connected: AtomicU64,
    /// Clients admitted since start.
    pub clients_accepted: AtomicU64,
    /// Clients refused by admission since start.
    pub clients_refused: AtomicU64,
    /// Connections that failed or timed out before finishing the handshake.
    pub handshakes_failed: AtomicU64,
    /// Packets queued for delivery to a connected client.
    pub packets_forwarded: AtomicU64,
    /// Packets dropped: unknown destination, queue overflow (oldest dropped), or queued for a
    /// client that disconnected before they were written.
    pub packets_dropped: AtomicU64,
    /// Of `packets_dropped`, those whose destination was not connected.
    pub packets_dropped_unknown_dest: AtomicU64,
    /// Of `packets_dropped`, those pushed out of a full queue.
    pub packets_dropped_queue_full: AtomicU64,
    /// Clients disconnected because a write took longer than the write timeout.
    pub write_timeouts: AtomicU64,
}

/// A plain copy of [`DerpStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DerpStatsSnapshot {
    /// See [`DerpStats::clients_connected`].
    pub clients_connected: u64,
    /// See [`DerpStats::clients_accepted`].
    pub clients_accepted: u64,
    /// See [`DerpStats::clients_refused`].
    pub clients_refused: u64,
    /// See [`DerpStats::handshakes_failed`].
    pub handshakes_failed: u64,
    /// See [`DerpStats::packets_forwarded`].
    pub packets_forwarded: u64,
    /// See [`DerpStats::packets_dropped`].
    pub packets_dropped: u64,
    /// See [`DerpStats::packets_dropped_unknown_dest`].
    pub packets_dropped_unknown_dest: u64,
    /// See [`DerpStats::packets_dropped_queue_full`].
    pub packets_dropped_queue_full: u64,
    /// See [`DerpStats::write_timeouts`].
    pub write_timeouts: u64,
}

impl DerpStats {
    /// Read every counter.
    pub fn snapshot(&self) -> DerpStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DerpStatsSnapshot {
            clients_connected: r(&self.clients_connected),
            clients_accepted: r(&self.clients_accepted),
            clients_refused: r(&self.clients_refused),
            handshakes_failed: r(&self.handshakes_failed),
            packets_forwarded: r(&self.packets_forwarded),
            packets_dropped: r(&self.packets_dropped),
            packets_dropped_unknown_dest: r(&self.packets_dropped_unknown_dest),
            packets_dropped_queue_full: r(&self.packets_dropped_queue_full),
            write_timeouts: r(&self.write_timeouts),
        }
    }
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) fn dec(counter: &AtomicU64) {
    // Only called to undo a matching `inc`, so the value never goes below zero.
    counter.fetch_sub(1, Ordering::Relaxed);
}
