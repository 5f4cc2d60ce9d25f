//! Part buffers reused from part to part of an upload.
//!
//! A new buffer for every part, freed after its `PUT`, leaves the freed
//! memory with the allocator, which keeps much of it. Peak memory then grows
//! past parts in flight × part size. A pool keeps up to `max_kept` buffers
//! and hands them out again.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Buffers of one upload, returned to the pool when the last [`Bytes`]
/// made from them is dropped.
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    max_kept: usize,
}

impl BufferPool {
    pub(crate) fn new(max_kept: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::with_capacity(max_kept)),
            max_kept,
        })
    }

    /// Returns a buffer of exactly `length` bytes, reused when one is free.
    /// Its contents are unspecified: the caller overwrites all of it.
    pub(crate) fn take(&self, length: usize) -> Vec<u8> {
        let reused = self.lock().pop();
        match reused {
            Some(mut buffer) => {
                // A shorter buffer (the last part's) grows with zeros, and a
                // longer one keeps its capacity for the next part.
                buffer.resize(length, 0);
                buffer
            }
            None => vec![0; length],
        }
    }

    /// Turns a filled buffer into [`Bytes`] that return it to the pool once
    /// every clone and slice of them is dropped.
    pub(crate) fn freeze(self: &Arc<Self>, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buffer,
            pool: self.clone(),
        })
    }

    fn give_back(&self, buffer: Vec<u8>) {
        let mut free = self.lock();
        if free.len() < self.max_kept {
            free.push(buffer);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.lock().len()
    }
}

struct Pooled {
    buffer: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_bytes_return_their_buffer() {
        let pool = BufferPool::new(2);
        let mut buffer = pool.take(1024);
        buffer.fill(7);
        let address = buffer.as_ptr();
        let bytes = pool.freeze(buffer);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.kept(), 0, "a slice still uses the buffer");

        drop(slice);
        assert_eq!(pool.kept(), 1);
        let again = pool.take(1024);
        assert_eq!(again.as_ptr(), address);
        assert_eq!(again.len(), 1024);
    }

    #[test]
    fn shorter_and_longer_requests_get_exact_lengths() {
        let pool = BufferPool::new(1);
        drop(pool.freeze(pool.take(100)));
        assert_eq!(pool.take(40).len(), 40);
        drop(pool.freeze(vec![1; 40]));
        assert_eq!(pool.take(100).len(), 100);
    }

    #[test]
    fn pool_keeps_at_most_max_kept() {
        let pool = BufferPool::new(2);
        let all: Vec<Bytes> = (0..4).map(|_| pool.freeze(pool.take(16))).collect();
        drop(all);
        assert_eq!(pool.kept(), 2);
    }
}
