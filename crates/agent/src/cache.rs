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
    /// Piece `piece` of `ih`, if cached (it then counts as just used).
    pub fn get(&self, ih: &InfoHash, piece: u32) -> Option<Bytes> {
        let mut g = self.lock();
        let (b, used) = g.get_mut(&(*ih, piece))?;
        *used = Instant::now();
        Some(b.clone())
    }

    /// Keeps piece `piece` of `ih`, dropping the least recently used pieces beyond the
    /// budget.
    pub fn insert(&self, ih: &InfoHash, piece: u32, b: Bytes) {
        let mut g = self.lock();
        g.insert((*ih, piece), (b, Instant::now()));
        let mut total: usize = g.values().map(|(b, _)| b.len()).sum();
        while total > BUDGET {
            let Some(oldest) = g.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k) else {
                break;
            };
            if let Some((b, _)) = g.remove(&oldest) {
                total -= b.len();
            }
        }
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
    fn keeps_pieces_within_budget() {
        let c = PieceCache::default();
        let ih = InfoHash([1; 20]);
        assert!(c.get(&ih, 0).is_none());
        c.insert(&ih, 0, Bytes::from(vec![7u8; 1 << 20]));
        assert_eq!(c.get(&ih, 0).map(|b| b.len()), Some(1 << 20));
        for p in 1..100 {
            c.insert(&ih, p, Bytes::from(vec![0u8; 1 << 20]));
        }
        let held: usize = c.lock().values().map(|(b, _)| b.len()).sum();
        assert!(held <= BUDGET, "{held} bytes held");
        assert!(c.get(&ih, 99).is_some(), "the newest piece stays");
        assert!(
            c.get(&ih, 0).is_none(),
            "the least recently used piece went"
        );
        c.forget(&ih);
        assert!(c.lock().is_empty());
    }
}
