//! Part buffers: an engine-wide budget of buffered bytes, and buffers reused
//! from part to part of an upload.
//!
//! Every upload part and every download range in flight has a
//! [`BudgetPermit`] for the bytes it buffers, taken from the engine's
//! [`BufferBudget`] before the buffer exists and given back when the buffer
//! is freed. A transfer that finds the budget spent waits for a permit
//! before it reads a part or sends a ranged `GET`; no request is open while
//! it waits, so the idle timeout, which watches requests, does not run.
//!
//! Permits are taken one part at a time, and a transfer never waits for a
//! permit while it needs another to finish a part, so a transfer holding
//! permits can always finish its parts and give them back. An upload waiting
//! for a buffer takes whichever comes first: a permit from the budget or
//! one of its own buffers coming back. Waiting only for the budget would
//! deadlock, since its returned buffers keep their permits.
//!
//! A new buffer for every part, freed after its `PUT`, leaves the freed
//! memory with the allocator, which keeps much of it. Peak memory then grows
//! past the bytes in flight. A [`BufferPool`] keeps up to `max_kept` buffers
//! of one upload, each with its permit, and hands them out again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Unit of the budget's semaphore: permits count KiB, so that a budget of
/// terabytes still fits the semaphore's `u32` requests.
const UNIT: u64 = 1024;

/// Bytes that the part buffers of every transfer of an engine may hold at
/// once.
#[derive(Debug)]
pub(crate) struct BufferBudget {
    units: Arc<Semaphore>,
    total_units: u32,
    buffered: AtomicU64,
    high_water: AtomicU64,
}

impl BufferBudget {
    /// A budget of `max_bytes`, rounded down to whole KiB and at least 1 KiB.
    pub(crate) fn new(max_bytes: u64) -> Arc<Self> {
        let units = (max_bytes / UNIT)
            .clamp(1, u64::from(u32::MAX))
            .min(Semaphore::MAX_PERMITS as u64);
        let total_units = u32::try_from(units).unwrap_or(u32::MAX);
        Arc::new(Self {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            buffered: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
        })
    }

    /// Waits until `bytes` fit in the budget and returns their permit. A
    /// request larger than the whole budget waits for all of it, so that a
    /// part larger than the budget is sent alone rather than never.
    pub(crate) async fn acquire(self: &Arc<Self>, bytes: u64) -> BudgetPermit {
        let units = bytes.div_ceil(UNIT).min(u64::from(self.total_units));
        let units = u32::try_from(units).unwrap_or(self.total_units);
        let permit = self
            .units
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        let buffered = self.buffered.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.high_water.fetch_max(buffered, Ordering::Relaxed);
        BudgetPermit {
            _units: permit,
            bytes,
            budget: self.clone(),
        }
    }

    /// Bytes held by permits now.
    pub(crate) fn buffered(&self) -> u64 {
        self.buffered.load(Ordering::Relaxed)
    }

    /// The most bytes ever held by permits at once.
    pub(crate) fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }
}

/// Bytes of the budget held by one buffer; given back when dropped.
#[derive(Debug)]
pub(crate) struct BudgetPermit {
    _units: OwnedSemaphorePermit,
    bytes: u64,
    budget: Arc<BufferBudget>,
}

impl BudgetPermit {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        self.budget
            .buffered
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Buffers of one upload with their permits, returned to the pool when the
/// last [`Bytes`] made from them is dropped. A kept buffer keeps its permit:
/// its memory is still allocated.
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<(Vec<u8>, BudgetPermit)>>,
    /// Notified each time a buffer is kept for reuse.
    returned: Notify,
    max_kept: usize,
    budget: Arc<BufferBudget>,
}

/// A buffer of exactly the length asked for, with the permit that covers it.
pub(crate) struct PartBuffer {
    pub(crate) buffer: Vec<u8>,
    permit: BudgetPermit,
}

impl BufferPool {
    pub(crate) fn new(max_kept: usize, budget: Arc<BufferBudget>) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::with_capacity(max_kept)),
            returned: Notify::new(),
            max_kept,
            budget,
        })
    }

    /// Returns a buffer of exactly `length` bytes: a free one whose permit
    /// covers `length`, or a new one once the budget has room, whichever
    /// comes first. Its contents are unspecified: the caller overwrites all
    /// of it.
    pub(crate) async fn take(&self, length: usize) -> PartBuffer {
        loop {
            let reused = self.lock().pop();
            if let Some((mut buffer, permit)) = reused {
                if permit.bytes() >= length as u64 {
                    // A longer buffer keeps its capacity for the next part.
                    buffer.resize(length, 0);
                    return PartBuffer { buffer, permit };
                }
                // Too short (the last part's, on a later resume): free it
                // and its permit before asking the budget for more.
                drop((buffer, permit));
            }

            // A buffer kept between the `pop` above and this wait leaves a
            // stored notification, so it is not missed.
            tokio::select! {
                permit = self.budget.acquire(length as u64) => {
                    return PartBuffer { buffer: vec![0; length], permit };
                }
                () = self.returned.notified() => {}
            }
        }
    }

    /// Turns a filled buffer into [`Bytes`] that return it to the pool once
    /// every clone and slice of them is dropped.
    pub(crate) fn freeze(self: &Arc<Self>, part: PartBuffer) -> Bytes {
        Bytes::from_owner(Pooled {
            buffer: part.buffer,
            permit: Some(part.permit),
            pool: self.clone(),
        })
    }

    fn give_back(&self, buffer: Vec<u8>, permit: BudgetPermit) {
        let mut free = self.lock();
        if free.len() < self.max_kept {
            free.push((buffer, permit));
            drop(free);
            self.returned.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Vec<u8>, BudgetPermit)>> {
        self.free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.lock().len()
    }
}

struct Pooled {
    buffer: Vec<u8>,
    permit: Option<BudgetPermit>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.pool
                .give_back(std::mem::take(&mut self.buffer), permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_kept: usize) -> Arc<BufferPool> {
        BufferPool::new(max_kept, BufferBudget::new(1 << 30))
    }

    #[tokio::test]
    async fn dropped_bytes_return_their_buffer() {
        let pool = pool(2);
        let mut part = pool.take(1024).await;
        part.buffer.fill(7);
        let address = part.buffer.as_ptr();
        let bytes = pool.freeze(part);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.kept(), 0, "a slice still uses the buffer");

        drop(slice);
        assert_eq!(pool.kept(), 1);
        let again = pool.take(1024).await;
        assert_eq!(again.buffer.as_ptr(), address);
        assert_eq!(again.buffer.len(), 1024);
    }

    #[tokio::test]
    async fn shorter_and_longer_requests_get_exact_lengths() {
        let pool = pool(1);
        drop(pool.freeze(pool.take(100).await));
        assert_eq!(pool.take(40).await.buffer.len(), 40);
        let short = pool.take(40).await;
        drop(pool.freeze(short));
        assert_eq!(pool.take(100).await.buffer.len(), 100);
    }

    #[tokio::test]
    async fn pool_keeps_at_most_max_kept() {
        let pool = pool(2);
        let mut all = Vec::new();
        for _ in 0..4 {
            all.push(pool.freeze(pool.take(16).await));
        }
        drop(all);
        assert_eq!(pool.kept(), 2);
    }

    #[tokio::test]
    async fn kept_buffers_keep_their_permits() {
        let budget = BufferBudget::new(64 * 1024);
        let pool = BufferPool::new(1, budget.clone());
        let first = pool.freeze(pool.take(16 * 1024).await);
        let second = pool.freeze(pool.take(16 * 1024).await);
        assert_eq!(budget.buffered(), 32 * 1024);

        drop(first);
        drop(second);
        assert_eq!(
            budget.buffered(),
            16 * 1024,
            "the kept buffer is still allocated"
        );
        drop(pool);
        assert_eq!(budget.buffered(), 0);
        assert_eq!(budget.high_water(), 32 * 1024);
    }

    #[tokio::test]
    async fn request_waits_for_budget_room() {
        let budget = BufferBudget::new(8 * 1024);
        let held = budget.acquire(6 * 1024).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(4 * 1024).await.bytes() }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "4 KiB do not fit beside 6 KiB in 8 KiB"
        );

        drop(held);
        assert_eq!(waiting.await.unwrap(), 4 * 1024);
        assert_eq!(budget.high_water(), 6 * 1024);
    }

    #[tokio::test]
    async fn returned_buffer_serves_waiting_take() {
        let budget = BufferBudget::new(16 * 1024);
        let pool = BufferPool::new(2, budget.clone());
        let in_flight = pool.freeze(pool.take(16 * 1024).await);
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take(16 * 1024).await.buffer.len() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the budget is spent");

        drop(in_flight);
        assert_eq!(waiting.await.unwrap(), 16 * 1024);
        assert_eq!(budget.high_water(), 16 * 1024);
    }

    #[tokio::test]
    async fn oversized_request_takes_whole_budget() {
        let budget = BufferBudget::new(4 * 1024);
        let permit = budget.acquire(10 * 1024).await;
        assert_eq!(permit.bytes(), 10 * 1024);
        assert_eq!(budget.units.available_permits(), 0);
    }
}
