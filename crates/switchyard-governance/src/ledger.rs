//! The ledger writer: usage rows and audit records reach the database in
//! batches, off the request path.
//!
//! The guarantee: a request whose response completed more than one flush
//! interval before a crash (even `kill -9`) has its rows in the database.
//! Rows are handed over when the response completes and written at the
//! next tick; a failed write is retried, never dropped, and shutdown
//! writes what is left before the process exits.

use std::sync::Mutex;
use std::time::Duration;

use switchyard_state::SqlStore;
use switchyard_state::records::{AuditRow, UsageRow};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// Most rows written in one transaction.
const MAX_BATCH: usize = 512;

enum Entry {
    Rows(Box<(UsageRow, AuditRow)>),
    Flush(oneshot::Sender<()>),
}

/// Hands rows to the writer task.
pub struct Ledger {
    sender: mpsc::UnboundedSender<Entry>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    /// Starts the writer task on the current runtime.
    pub fn start(store: SqlStore, flush_interval: Duration) -> Self {
        // Unbounded on purpose: a slow database must not make completed
        // requests lose their rows; the backlog is logged as it grows.
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(store, receiver, flush_interval));
        Self {
            sender,
            writer: Mutex::new(Some(writer)),
        }
    }

    /// Queues one request's rows.
    pub fn record(&self, usage: UsageRow, audit: AuditRow) {
        if self
            .sender
            .send(Entry::Rows(Box::new((usage, audit))))
            .is_err()
        {
            error!("ledger writer is gone; a usage row was not recorded");
        }
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Entry::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Writes what is queued and stops the writer (at shutdown).
    pub async fn close(&self) {
        self.flush().await;
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            writer.abort();
            let _ = writer.await;
        }
    }
}

async fn write_loop(
    store: SqlStore,
    mut receiver: mpsc::UnboundedReceiver<Entry>,
    flush_interval: Duration,
) {
    let mut usage = Vec::new();
    let mut audit = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut tick = tokio::time::interval(flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let closed = tokio::select! {
            entry = receiver.recv() => match entry {
                Some(Entry::Rows(rows)) => {
                    let (u, a) = *rows;
                    usage.push(u);
                    audit.push(a);
                    if usage.len() < MAX_BATCH {
                        continue;
                    }
                    false
                }
                Some(Entry::Flush(done)) => {
                    waiting.push(done);
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
        };
        let started = std::time::Instant::now();
        let rows = usage.len();
        write_all(&store, &mut usage, &mut audit).await;
        if started.elapsed() > flush_interval {
            // The crash guarantee is stated in flush intervals; a database
            // slower than that stretches it.
            warn!(
                rows,
                write_ms = started.elapsed().as_millis() as u64,
                "ledger write took longer than the flush interval"
            );
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if closed {
            info!("ledger writer stopped; every queued row is written");
            return;
        }
    }
}

/// Writes the batch, retrying until it succeeds: rows are never dropped.
async fn write_all(store: &SqlStore, usage: &mut Vec<UsageRow>, audit: &mut Vec<AuditRow>) {
    if usage.is_empty() && audit.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        match store.append(usage, audit).await {
            Ok(()) => {
                debug!(rows = usage.len(), "ledger batch written");
                usage.clear();
                audit.clear();
                return;
            }
            Err(error) => {
                warn!(%error, rows = usage.len(), retry_in_ms = backoff.as_millis() as u64, "ledger batch not written; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
