//! The queue between a tailnet and one map session: bounded, and holding no allocation while it is empty.
//!
//! `tokio::sync::mpsc` allocates its first block of 32 slots (~1 KiB) when the channel is made and keeps it for the
//! channel's life; a map session is idle almost all the time, so that block was a large part of what a connected
//! node cost. Here the frames live in a `VecDeque` that is released whenever the session has taken them all.

use crate::tailnet::Frame;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// Makes a queue that holds at most `capacity` frames before its session counts as lagging.
pub(crate) fn session_queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared { capacity, state: Mutex::new(State::default()) });
    (QueueSender(shared.clone()), QueueReceiver(shared))
}

struct Shared {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    waker: Option<Waker>,
    /// Frames were refused because the queue was full: the session must catch up with a full map.
    lagged: bool,
    /// One end was dropped.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever a panicking holder was doing: every update is a single assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The tailnet's end.
pub(crate) struct QueueSender(Arc<Shared>);

impl QueueSender {
    /// Queues `frame` for the session. A full queue drops it and marks the session lagged, and frames for a lagged
    /// session are dropped until it has caught up: it is going to be sent a full map instead.
    pub fn send(&self, frame: Frame) {
        let waker = {
            let mut state = self.0.lock();
            if state.lagged || state.closed {
                return;
            }
            if state.frames.len() >= self.0.capacity {
                state.lagged = true;
                return;
            }
            state.frames.push_back(frame);
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The map session's end.
pub(crate) struct QueueReceiver(Arc<Shared>);

impl QueueReceiver {
    /// Whether frames were dropped since the last call; if so the queued ones are discarded too, since the full map
    /// the session sends next supersedes them.
    pub fn take_lagged(&mut self) -> bool {
        let mut state = self.0.lock();
        if !std::mem::take(&mut state.lagged) {
            return false;
        }
        state.frames = VecDeque::new();
        true
    }

    /// The next queued frame, if one is waiting (tests read queues without waiting).
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<Frame> {
        let mut state = self.0.lock();
        let frame = state.frames.pop_front();
        if state.frames.is_empty() && state.frames.capacity() > 0 {
            state.frames = VecDeque::new();
        }
        frame
    }

    /// Waits for the next frame; `None` once the sender is gone (the session was replaced or its node deleted)
    /// and nothing is left. A lagged queue also wakes the receiver, which must then check [`Self::take_lagged`].
    pub async fn recv(&mut self) -> Option<Frame> {
        poll_fn(|cx| {
            let mut state = self.0.lock();
            if let Some(frame) = state.frames.pop_front() {
                if state.frames.is_empty() {
                    state.frames = VecDeque::new();
                }
                return Poll::Ready(Some(frame));
            }
            if state.closed {
                return Poll::Ready(None);
            }
            if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                state.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(n: u8) -> Frame {
        Bytes::from(vec![n])
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_the_buffer_is_released_when_drained() {
        let (tx, mut rx) = session_queue(4);
        tx.send(frame(1));
        tx.send(frame(2));
        assert_eq!(rx.recv().await, Some(frame(1)));
        assert_eq!(rx.try_recv(), Some(frame(2)));
        assert_eq!(rx.0.lock().frames.capacity(), 0, "a drained queue holds no allocation");
        assert_eq!(rx.try_recv(), None);
        assert!(!rx.take_lagged());
    }

    #[tokio::test]
    async fn a_full_queue_marks_the_session_lagged_until_it_is_taken() {
        let (tx, mut rx) = session_queue(2);
        for n in 0..5 {
            tx.send(frame(n));
        }
        assert_eq!(rx.0.lock().frames.len(), 2);
        assert!(rx.take_lagged());
        assert_eq!(rx.try_recv(), None, "queued frames are superseded by the full map");
        assert!(!rx.take_lagged());
        tx.send(frame(9));
        assert_eq!(rx.recv().await, Some(frame(9)));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_frame_and_ends_when_the_sender_goes() {
        let (tx, mut rx) = session_queue(2);
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        tx.send(frame(7));
        tokio::task::yield_now().await;
        drop(tx);
        let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!((first, second), (Some(frame(7)), None));
    }

    #[test]
    fn nothing_is_queued_once_the_receiver_is_gone() {
        let (tx, rx) = session_queue(2);
        let shared = rx.0.clone();
        drop(rx);
        tx.send(frame(1));
        assert!(shared.lock().frames.is_empty());
    }
}
