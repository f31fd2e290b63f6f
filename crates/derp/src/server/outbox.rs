//! The per-connection send side: bounded queues filled by other clients' read loops and drained
//! by this connection's write loop.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

use super::queue::DropOldestQueue;
use crate::Key;
use crate::frame::PeerGoneReason;

/// Most control frames (Pong, PeerGone) waiting to be written; more are dropped, newest first.
const CONTROL_DEPTH: usize = 64;

/// Something the write loop has to send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// An encoded RecvPacket frame.
    Frame(Bytes),
    /// Reply to a Ping.
    Pong([u8; 8]),
    /// Tell the client a peer is gone.
    PeerGone(Key, PeerGoneReason),
}

/// Outcome of queueing a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued without loss.
    Queued,
    /// Queued; the oldest packet of the same queue was dropped to make room.
    DroppedOldest,
    /// Not queued: the connection is closing.
    Closed,
}

#[derive(Debug)]
struct State {
    control: VecDeque<Outgoing>,
    pong_pending: bool,
    disco: DropOldestQueue<Bytes>,
    data: DropOldestQueue<Bytes>,
    queued_packets: usize,
    closed: bool,
}

/// Queues for one connection: control frames, then disco packets, then data packets.
///
/// Pushing never blocks (a short mutex section) and never waits for the receiving client: a
/// full packet queue drops its oldest packet.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    notify: Notify,
}

impl Outbox {
    /// Empty queues; each packet queue holds `depth` packets.
    pub(crate) fn new(depth: usize) -> Self {
        Self {
            state: Mutex::new(State {
                control: VecDeque::new(),
                pong_pending: false,
                disco: DropOldestQueue::new(depth),
                data: DropOldestQueue::new(depth),
                queued_packets: 0,
                closed: false,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in the critical sections can panic; recover the data if a panic ever did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue an encoded RecvPacket frame on the disco or the data queue.
    pub(crate) fn push_packet(&self, frame: Bytes, disco: bool) -> Pushed {
        let mut st = self.lock();
        if st.closed {
            return Pushed::Closed;
        }
        let dropped = if disco { st.disco.push(frame) } else { st.data.push(frame) };
        if !dropped {
            st.queued_packets += 1;
        }
        drop(st);
        self.notify.notify_one();
        if dropped { Pushed::DroppedOldest } else { Pushed::Queued }
    }

    /// Queue a Pong unless one is already waiting. Returns whether it was queued.
    pub(crate) fn push_pong(&self, data: [u8; 8]) -> bool {
        let mut st = self.lock();
        if st.closed || st.pong_pending || st.control.len() >= CONTROL_DEPTH {
            return false;
        }
        st.pong_pending = true;
        st.control.push_back(Outgoing::Pong(data));
        drop(st);
        self.notify.notify_one();
        true
    }

    /// Queue a PeerGone. Returns whether it was queued.
    pub(crate) fn push_peer_gone(&self, key: Key, reason: PeerGoneReason) -> bool {
        let mut st = self.lock();
        if st.closed || st.control.len() >= CONTROL_DEPTH {
            return false;
        }
        st.control.push_back(Outgoing::PeerGone(key, reason));
        drop(st);
        self.notify.notify_one();
        true
    }

    /// Next item to write: control frames first, then disco, then data.
    pub(crate) fn pop(&self) -> Option<Outgoing> {
        let mut st = self.lock();
        if let Some(item) = st.control.pop_front() {
            if matches!(item, Outgoing::Pong(_)) {
                st.pong_pending = false;
            }
            return Some(item);
        }
        let packet = st.disco.pop().or_else(|| st.data.pop())?;
        st.queued_packets -= 1;
        Some(Outgoing::Frame(packet))
    }

    /// Wait until something may have been queued since the last call.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Refuse further items and discard what is queued; returns how many packets were discarded.
    pub(crate) fn close(&self) -> usize {
        let mut st = self.lock();
        st.closed = true;
        st.control.clear();
        while st.disco.pop().is_some() {}
        while st.data.pop().is_some() {}
        std::mem::take(&mut st.queued_packets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn control_then_disco_then_data() {
        let o = Outbox::new(4);
        assert_eq!(o.push_packet(b(1), false), Pushed::Queued);
        assert_eq!(o.push_packet(b(2), true), Pushed::Queued);
        assert!(o.push_peer_gone([9; 32], PeerGoneReason::NotHere));
        assert_eq!(o.pop(), Some(Outgoing::PeerGone([9; 32], PeerGoneReason::NotHere)));
        assert_eq!(o.pop(), Some(Outgoing::Frame(b(2))));
        assert_eq!(o.pop(), Some(Outgoing::Frame(b(1))));
        assert_eq!(o.pop(), None);
    }

    #[test]
    fn full_queue_drops_oldest_independently_per_queue() {
        let o = Outbox::new(2);
        for i in 0..5 {
            o.push_packet(b(i), false);
        }
        assert_eq!(o.push_packet(b(100), true), Pushed::Queued, "disco queue is separate");
        assert_eq!(o.pop(), Some(Outgoing::Frame(b(100))));
        assert_eq!(o.pop(), Some(Outgoing::Frame(b(3))));
        assert_eq!(o.pop(), Some(Outgoing::Frame(b(4))));
        assert_eq!(o.pop(), None);
    }

    #[test]
    fn one_pending_pong_at_a_time() {
        let o = Outbox::new(2);
        assert!(o.push_pong(*b"aaaaaaaa"));
        assert!(!o.push_pong(*b"bbbbbbbb"));
        assert_eq!(o.pop(), Some(Outgoing::Pong(*b"aaaaaaaa")));
        assert!(o.push_pong(*b"cccccccc"));
    }

    #[test]
    fn close_discards_and_counts() {
        let o = Outbox::new(8);
        o.push_packet(b(1), false);
        o.push_packet(b(2), true);
        o.push_packet(b(3), false);
        o.pop();
        assert_eq!(o.close(), 2);
        assert_eq!(o.push_packet(b(4), false), Pushed::Closed);
        assert!(!o.push_peer_gone([0; 32], PeerGoneReason::Disconnected));
        assert_eq!(o.pop(), None);
    }
}
