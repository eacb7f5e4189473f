//! Pieces read from disk to serve peers, kept a little while: a peer asks for a piece in
//! 16 KiB blocks, so the piece is read once (one read of the shard file) and each block
//! is a slice of it, sent without another copy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmbak_format::InfoHash;

/// Bytes the cache holds at most.
pub const BUDGET: usize = 32 << 20;
/// A piece nobody asked for this long is dropped (an idle agent holds nothing).
pub const IDLE: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct PieceCache {
    inner: Mutex<HashMap<(InfoHash, u32), (Bytes, Instant)>>,
}

impl PieceCache {
    /// Piece `piece` of `ih`, from the cache or from `read` (called without the lock held).
    pub fn get_or_read(
        &self,
        ih: &InfoHash,
        piece: u32,
        read: impl FnOnce() -> Option<Bytes>,
    ) -> Option<Bytes> {
        let now = Instant::now();
        if let Some((b, used)) = self.lock().get_mut(&(*ih, piece)) {
            *used = now;
            return Some(b.clone());
        }
        let b = read()?;
        let mut g = self.lock();
        g.insert((*ih, piece), (b.clone(), now));
        let mut total: usize = g.values().map(|(b, _)| b.len()).sum();
        while total > BUDGET {
            let Some(oldest) = g.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k) else {
                break;
            };
            if let Some((b, _)) = g.remove(&oldest) {
                total -= b.len();
            }
        }
        Some(b)
    }

    /// Drops the pieces of `ih` (its files changed or it left the engine).
    pub fn forget(&self, ih: &InfoHash) {
        self.lock().retain(|(i, _), _| i != ih);
    }

    /// Drops pieces unused for [`IDLE`].
    pub fn expire(&self) {
        let now = Instant::now();
        self.lock()
            .retain(|_, (_, used)| now.duration_since(*used) < IDLE);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(InfoHash, u32), (Bytes, Instant)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_once_and_stays_within_budget() {
        let c = PieceCache::default();
        let ih = InfoHash([1; 20]);
        let mut reads = 0;
        for _ in 0..3 {
            let b = c.get_or_read(&ih, 0, || {
                reads += 1;
                Some(Bytes::from(vec![7u8; 1 << 20]))
            });
            assert_eq!(b.map(|b| b.len()), Some(1 << 20));
        }
        assert_eq!(reads, 1, "a cached piece is not read again");
        for p in 1..100 {
            c.get_or_read(&ih, p, || Some(Bytes::from(vec![0u8; 1 << 20])));
        }
        let held: usize = c.lock().values().map(|(b, _)| b.len()).sum();
        assert!(held <= BUDGET, "{held} bytes held");
        assert!(c.lock().contains_key(&(ih, 99)), "the newest piece stays");
        assert!(c.get_or_read(&ih, 500, || None).is_none());
        c.forget(&ih);
        assert!(c.lock().is_empty());
    }
}
