//! The thread the hot write transactions run on (registrations and the batched map-session writes).
//!
//! A transaction makes one round trip per statement (to SQLite's connection thread, or to PostgreSQL) and holds
//! the single SQLite writer, or PostgreSQL's tenant row lock, across all of them. Run on the request runtime, every
//! reply waits in a run queue behind map encoding and other requests before the next statement is sent: at a few
//! hundred joins per second that wait, not SQL, bounded registrations to ~350/s on two cores (2.7 ms of writer time
//! each, most of it queued). On a runtime of its own with nothing else to do, a reply is acted on at once.

use crate::error::{Result, StoreError};
use std::future::Future;
use tokio::sync::oneshot;

/// A current-thread runtime on a thread of its own; it stops when the last [`crate::Store`] clone is dropped.
#[derive(Debug)]
pub(crate) struct WriterThread {
    handle: tokio::runtime::Handle,
    /// Dropping it ends the thread (and cancels what it still runs, rolling those transactions back).
    _stop: oneshot::Sender<()>,
}

impl WriterThread {
    pub(crate) fn start() -> Result<WriterThread> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StoreError::Writer)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                // Either a stop or the sender being dropped ends it.
                let _ = runtime.block_on(stopped);
            })
            .map_err(StoreError::Writer)?;
        Ok(WriterThread { handle, _stop: stop })
    }

    /// Runs `work` on the writer thread and waits for its result. If the caller stops waiting, `work` is cancelled
    /// (an open transaction rolls back), as it would be on the caller's own runtime: a registration whose client went
    /// away must not leave a stored node the caller never applied to its tailnet.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let mut task = AbortOnDrop(self.handle.spawn(work));
        match (&mut task.0).await {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StoreError::Writer(std::io::Error::other("the store's writer thread stopped"))),
        }
    }
}

/// Cancels the task when the caller's future is dropped before it finished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
