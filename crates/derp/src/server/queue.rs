//! Pure building blocks for the relay: a drop-oldest bounded queue and a token bucket.
//! Time is passed in, so both are deterministic under test.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A FIFO queue of at most `capacity` items that makes room for a new item by dropping the oldest.
#[derive(Debug)]
pub(crate) struct DropOldestQueue<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> DropOldestQueue<T> {
    /// An empty queue holding at most `capacity` items (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { items: VecDeque::with_capacity(capacity), capacity }
    }

    /// Append `item`; returns `true` if the oldest item had to be dropped to make room.
    pub(crate) fn push(&mut self, item: T) -> bool {
        let dropped = if self.items.len() >= self.capacity {
            self.items.pop_front();
            true
        } else {
            false
        };
        self.items.push_back(item);
        dropped
    }

    /// Take the oldest item.
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Number of queued items.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

/// A token bucket: `burst` tokens, refilled at one token per `interval`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(interval: Duration, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        let secs = interval.as_secs_f64();
        let per_second = if secs > 0.0 { 1.0 / secs } else { f64::INFINITY };
        Self { burst, per_second, tokens: burst, last: None }
    }

    /// Take a token at time `now` if one is available.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_oldest_keeps_the_newest_items() {
        let mut q = DropOldestQueue::new(3);
        assert!(!q.push(1));
        assert!(!q.push(2));
        assert!(!q.push(3));
        assert!(q.push(4));
        assert!(q.push(5));
        assert_eq!(q.len(), 3);
        assert_eq!((q.pop(), q.pop(), q.pop(), q.pop()), (Some(3), Some(4), Some(5), None));
    }

    #[test]
    fn zero_capacity_is_treated_as_one() {
        let mut q = DropOldestQueue::new(0);
        assert!(!q.push('a'));
        assert!(q.push('b'));
        assert_eq!(q.pop(), Some('b'));
    }

    #[test]
    fn token_bucket_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(Duration::from_secs(1), 3);
        assert!(b.allow(t0));
        assert!(b.allow(t0));
        assert!(b.allow(t0));
        assert!(!b.allow(t0));
        assert!(!b.allow(t0 + Duration::from_millis(900)));
        assert!(b.allow(t0 + Duration::from_millis(1000)));
        assert!(!b.allow(t0 + Duration::from_millis(1100)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        assert!(b.allow(later));
        assert!(b.allow(later));
        assert!(b.allow(later));
        assert!(!b.allow(later));
    }
}
