//! Rarest-first piece picking over 16 KiB blocks, with a wanted set and endgame.
//!
//! - Pieces already started are finished first (fewer partial pieces in flight).
//! - New pieces are taken rarest first (fewest connected peers have them), ties broken
//!   at random.
//! - Only wanted pieces are requested; the caller may mark a piece unwanted at any time
//!   (swarmbak fetch wants any k shards of a stripe, and no more once it has them).
//! - Endgame: once every block that any peer could give us is requested, blocks still in
//!   flight are requested from other peers too, and the duplicates cancelled when the
//!   first copy arrives.
//! - A piece that failed its hash check is downloaded again from a single peer, so the
//!   next failure names the liar.

use std::collections::BTreeMap;
use std::hash::Hash;

use crate::bitfield::Bitfield;
use crate::error::PickerError;
use crate::message::{BlockRef, BLOCK_SIZE};
use crate::rng::Rng;

/// Largest piece length accepted: 16 MiB.
pub const MAX_PIECE_LENGTH: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum BlockState<P> {
    Missing,
    Requested(Vec<P>),
    Received,
}

#[derive(Debug, Clone)]
struct Progress<P> {
    blocks: Vec<BlockState<P>>,
    contributors: Vec<P>,
    single_source: bool,
    owner: Option<P>,
}

/// What a received block meant to the picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOutcome<P> {
    /// The block is not one of the torrent's 16 KiB blocks, or its piece was not being
    /// downloaded: nobody asked for it.
    Unrequested,
    /// Already received (from another peer in endgame, or twice): drop the bytes.
    Duplicate,
    /// New data: store it.
    Accepted {
        /// Every block of the piece is in: verify it, then call
        /// [`PiecePicker::piece_verified`] or [`PiecePicker::piece_failed`].
        piece_complete: bool,
        /// Other peers this block was also requested from: send them `cancel`.
        cancel: Vec<P>,
    },
}

/// The piece picker for one torrent. `P` is the caller's peer key.
#[derive(Debug, Clone)]
pub struct PiecePicker<P> {
    piece_length: u32,
    total_length: u64,
    availability: Vec<u32>,
    have: Bitfield,
    wanted: Bitfield,
    progress: BTreeMap<u32, Progress<P>>,
    rng: Rng,
}

impl<P: Clone + Eq + Hash> PiecePicker<P> {
    /// A picker for `num_pieces` pieces of `piece_length` bytes (the last one shorter
    /// when `total_length` says so), every piece wanted, none had.
    pub fn new(
        num_pieces: u32,
        piece_length: u64,
        total_length: u64,
        seed: u64,
    ) -> Result<Self, PickerError> {
        if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
            return Err(PickerError::PieceLength(piece_length));
        }
        let expected = total_length.div_ceil(piece_length);
        if expected != u64::from(num_pieces) {
            return Err(PickerError::PieceCount {
                total_length,
                piece_length,
                num_pieces,
                expected,
            });
        }
        Ok(PiecePicker {
            piece_length: piece_length as u32,
            total_length,
            availability: vec![0; num_pieces as usize],
            have: Bitfield::new(num_pieces),
            wanted: Bitfield::full(num_pieces),
            progress: BTreeMap::new(),
            rng: Rng::new(seed),
        })
    }

    /// Number of pieces.
    pub fn num_pieces(&self) -> u32 {
        self.have.len()
    }

    /// Bytes in piece `piece` (0 past the end).
    pub fn piece_size(&self, piece: u32) -> u32 {
        if piece >= self.num_pieces() {
            return 0;
        }
        let start = u64::from(piece) * u64::from(self.piece_length);
        (self.total_length - start).min(u64::from(self.piece_length)) as u32
    }

    /// Number of 16 KiB blocks in piece `piece`.
    pub fn blocks_in_piece(&self, piece: u32) -> u32 {
        self.piece_size(piece).div_ceil(BLOCK_SIZE)
    }

    /// Block `index` of piece `piece`.
    pub fn block(&self, piece: u32, index: u32) -> BlockRef {
        let offset = index * BLOCK_SIZE;
        BlockRef::new(
            piece,
            offset,
            self.piece_size(piece)
                .saturating_sub(offset)
                .min(BLOCK_SIZE),
        )
    }

    /// Is `block` exactly one of this torrent's blocks?
    pub fn is_valid_block(&self, block: &BlockRef) -> bool {
        block.piece < self.num_pieces()
            && block.length > 0
            && *block == self.block(block.piece, block.offset / BLOCK_SIZE)
    }

    /// The pieces we have (verified).
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// How many connected peers have `piece`.
    pub fn availability(&self, piece: u32) -> u32 {
        self.availability.get(piece as usize).copied().unwrap_or(0)
    }

    /// Every wanted piece is had?
    pub fn is_complete(&self) -> bool {
        self.wanted.iter_ones().all(|p| self.have.get(p))
    }

    /// Is `piece` wanted?
    pub fn is_wanted(&self, piece: u32) -> bool {
        self.wanted.get(piece)
    }

    /// Marks a piece wanted or unwanted. Unwanting a piece in progress forgets its
    /// progress and returns the requests to cancel.
    pub fn set_wanted(&mut self, piece: u32, wanted: bool) -> Vec<(P, BlockRef)> {
        self.wanted.set(piece, wanted);
        let mut cancel = Vec::new();
        if !wanted {
            if let Some(progress) = self.progress.remove(&piece) {
                for (i, state) in progress.blocks.iter().enumerate() {
                    if let BlockState::Requested(peers) = state {
                        let b = self.block(piece, i as u32);
                        cancel.extend(peers.iter().map(|p| (p.clone(), b)));
                    }
                }
            }
        }
        cancel
    }

    /// A peer's pieces join the swarm we see (its bitfield, or a full one for have-all).
    pub fn add_peer(&mut self, has: &Bitfield) {
        for p in has.iter_ones() {
            if let Some(a) = self.availability.get_mut(p as usize) {
                *a += 1;
            }
        }
    }

    /// A peer left: its pieces leave the availability counts (pass its final bitfield),
    /// and its requests are forgotten.
    pub fn remove_peer(&mut self, peer: &P, has: &Bitfield) {
        self.remove_pieces(has);
        for progress in self.progress.values_mut() {
            for state in &mut progress.blocks {
                drop_requester(state, peer);
            }
            if progress.owner.as_ref() == Some(peer) {
                progress.owner = None;
            }
        }
    }

    /// A peer's pieces leave the availability counts (it sent a new bitfield in place of
    /// `has`); its requests stand.
    pub fn remove_pieces(&mut self, has: &Bitfield) {
        for p in has.iter_ones() {
            if let Some(a) = self.availability.get_mut(p as usize) {
                *a = a.saturating_sub(1);
            }
        }
    }

    /// A peer announced one more piece (`have`). Call once per newly set bit.
    pub fn add_have(&mut self, piece: u32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a += 1;
        }
    }

    /// Does a peer with `has` have anything we want and lack?
    pub fn is_interesting(&self, has: &Bitfield) -> bool {
        has.iter_ones()
            .any(|p| self.wanted.get(p) && !self.have.get(p))
    }

    fn can_use(&self, piece: u32, has: &Bitfield, allowed: Option<&[u32]>) -> bool {
        self.wanted.get(piece)
            && !self.have.get(piece)
            && has.get(piece)
            && allowed.is_none_or(|a| a.contains(&piece))
    }

    /// Up to `max` blocks to request from `peer`, which has `has`; they are recorded as
    /// in flight. With `allowed` (we are choked: the BEP 6 allowed-fast set), only those
    /// pieces.
    pub fn pick(
        &mut self,
        peer: &P,
        has: &Bitfield,
        max: usize,
        allowed: Option<&[u32]>,
    ) -> Vec<BlockRef> {
        let mut out = Vec::new();
        if max == 0 {
            return out;
        }
        // 1. pieces in progress
        let started: Vec<u32> = self.progress.keys().copied().collect();
        for piece in started {
            if out.len() >= max {
                return out;
            }
            if self.can_use(piece, has, allowed) {
                self.take_missing(piece, peer, max, &mut out);
            }
        }
        // 2. new pieces, rarest first, random among equals
        let mut fresh: Vec<(u32, u64, u32)> = (0..self.num_pieces())
            .filter(|p| !self.progress.contains_key(p) && self.can_use(*p, has, allowed))
            .map(|p| (self.availability(p), 0, p))
            .collect();
        for f in &mut fresh {
            f.1 = self.rng.next_u64();
        }
        fresh.sort_unstable();
        for (_, _, piece) in fresh {
            if out.len() >= max {
                return out;
            }
            let blocks = self.blocks_in_piece(piece) as usize;
            self.progress.insert(
                piece,
                Progress {
                    blocks: vec![BlockState::Missing; blocks],
                    contributors: Vec::new(),
                    single_source: false,
                    owner: None,
                },
            );
            self.take_missing(piece, peer, max, &mut out);
        }
        // 3. endgame: everything obtainable is requested; duplicate what is in flight
        if out.is_empty() && self.in_endgame() {
            let started: Vec<u32> = self.progress.keys().copied().collect();
            for piece in started {
                if !self.can_use(piece, has, allowed) {
                    continue;
                }
                let Some(progress) = self.progress.get_mut(&piece) else {
                    continue;
                };
                if progress.single_source {
                    continue;
                }
                let mut picked = Vec::new();
                for (i, state) in progress.blocks.iter_mut().enumerate() {
                    if out.len() + picked.len() >= max {
                        break;
                    }
                    if let BlockState::Requested(peers) = state {
                        if !peers.contains(peer) {
                            peers.push(peer.clone());
                            picked.push(i as u32);
                        }
                    }
                }
                out.extend(picked.into_iter().map(|i| self.block(piece, i)));
                if out.len() >= max {
                    break;
                }
            }
        }
        out
    }

    fn take_missing(&mut self, piece: u32, peer: &P, max: usize, out: &mut Vec<BlockRef>) {
        let Some(progress) = self.progress.get_mut(&piece) else {
            return;
        };
        if progress.single_source {
            match &progress.owner {
                Some(o) if o != peer => return,
                Some(_) => {}
                None => progress.owner = Some(peer.clone()),
            }
        }
        let mut picked = Vec::new();
        for (i, state) in progress.blocks.iter_mut().enumerate() {
            if out.len() + picked.len() >= max {
                break;
            }
            if *state == BlockState::Missing {
                *state = BlockState::Requested(vec![peer.clone()]);
                picked.push(i as u32);
            }
        }
        out.extend(picked.into_iter().map(|i| self.block(piece, i)));
    }

    /// True when no block of a wanted piece that some peer has is left unrequested.
    pub fn in_endgame(&self) -> bool {
        let any_unrequested = (0..self.num_pieces()).any(|p| {
            if !self.wanted.get(p) || self.have.get(p) || self.availability(p) == 0 {
                return false;
            }
            match self.progress.get(&p) {
                None => true,
                Some(progress) => progress.blocks.contains(&BlockState::Missing),
            }
        });
        !any_unrequested && !self.progress.is_empty()
    }

    /// A request to `peer` ended without data (rejected, timed out, choked away,
    /// cancelled): the block may be requested again.
    pub fn request_failed(&mut self, peer: &P, block: &BlockRef) {
        if let Some(progress) = self.progress.get_mut(&block.piece) {
            if let Some(state) = progress
                .blocks
                .get_mut((block.offset / BLOCK_SIZE) as usize)
            {
                drop_requester(state, peer);
            }
        }
    }

    /// `peer` sent `block`.
    pub fn block_received(&mut self, peer: &P, block: &BlockRef) -> BlockOutcome<P> {
        if !self.is_valid_block(block) {
            return BlockOutcome::Unrequested;
        }
        if self.have.get(block.piece) {
            return BlockOutcome::Duplicate;
        }
        let Some(progress) = self.progress.get_mut(&block.piece) else {
            return BlockOutcome::Unrequested;
        };
        let Some(state) = progress
            .blocks
            .get_mut((block.offset / BLOCK_SIZE) as usize)
        else {
            return BlockOutcome::Unrequested;
        };
        let cancel = match std::mem::replace(state, BlockState::Received) {
            BlockState::Received => return BlockOutcome::Duplicate,
            BlockState::Missing => Vec::new(),
            BlockState::Requested(peers) => peers.into_iter().filter(|p| p != peer).collect(),
        };
        if !progress.contributors.contains(peer) {
            progress.contributors.push(peer.clone());
        }
        let piece_complete = progress.blocks.iter().all(|s| *s == BlockState::Received);
        BlockOutcome::Accepted {
            piece_complete,
            cancel,
        }
    }

    /// The piece passed its hash check (or was found on disk): we have it.
    pub fn piece_verified(&mut self, piece: u32) {
        self.progress.remove(&piece);
        self.have.set(piece, true);
    }

    /// A piece we had is gone (found damaged or missing on disk): we no longer have it,
    /// and it is downloaded again if wanted.
    pub fn piece_lost(&mut self, piece: u32) {
        self.have.set(piece, false);
    }

    /// The piece failed its hash check. Returns the peers that sent its blocks. The piece
    /// is downloaded again, from a single peer.
    pub fn piece_failed(&mut self, piece: u32) -> Vec<P> {
        let blocks = self.blocks_in_piece(piece) as usize;
        let Some(progress) = self.progress.get_mut(&piece) else {
            return Vec::new();
        };
        progress.blocks = vec![BlockState::Missing; blocks];
        progress.single_source = true;
        progress.owner = None;
        std::mem::take(&mut progress.contributors)
    }
}

fn drop_requester<P: Eq>(state: &mut BlockState<P>, peer: &P) {
    if let BlockState::Requested(peers) = state {
        peers.retain(|p| p != peer);
        if peers.is_empty() {
            *state = BlockState::Missing;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 16 * 1024;

    fn bf(len: u32, ones: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in ones {
            b.set(*i, true);
        }
        b
    }

    #[test]
    fn geometry() {
        let p: PiecePicker<u8> = PiecePicker::new(3, 4 * K, 9 * K + 100, 1).unwrap();
        assert_eq!(p.piece_size(2), (K + 100) as u32);
        assert_eq!(p.blocks_in_piece(2), 2);
        assert_eq!(p.block(2, 1), BlockRef::new(2, BLOCK_SIZE, 100));
        assert!(p.is_valid_block(&BlockRef::new(2, BLOCK_SIZE, 100)));
        assert!(!p.is_valid_block(&BlockRef::new(2, BLOCK_SIZE, 101)));
        assert!(!p.is_valid_block(&BlockRef::new(1, 100, BLOCK_SIZE)));
        assert!(!p.is_valid_block(&BlockRef::new(3, 0, BLOCK_SIZE)));
        assert!(PiecePicker::<u8>::new(3, 4 * K, 12 * K + 1, 1).is_err());
        assert!(PiecePicker::<u8>::new(1, MAX_PIECE_LENGTH + 1, 10, 1).is_err());
        assert!(PiecePicker::<u8>::new(1, 0, 10, 1).is_err());
        let big: PiecePicker<u8> =
            PiecePicker::new(2, MAX_PIECE_LENGTH, 2 * MAX_PIECE_LENGTH, 1).unwrap();
        assert_eq!(big.blocks_in_piece(1), 1024);
    }

    #[test]
    fn rarest_first() {
        let mut p: PiecePicker<u8> = PiecePicker::new(4, K, 4 * K, 1).unwrap();
        p.add_peer(&bf(4, &[0, 1, 2, 3]));
        p.add_peer(&bf(4, &[0, 1, 3]));
        p.add_peer(&bf(4, &[0, 3]));
        // availability: 0:3 1:2 2:1 3:3
        let all = Bitfield::full(4);
        let order: Vec<u32> = p.pick(&9, &all, 4, None).iter().map(|b| b.piece).collect();
        assert_eq!(order[..2], [2, 1]);
        assert!(order[2..] == [0, 3] || order[2..] == [3, 0]);
    }

    #[test]
    fn ties_broken_at_random() {
        let mut firsts = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let mut p: PiecePicker<u8> = PiecePicker::new(8, K, 8 * K, seed).unwrap();
            let all = Bitfield::full(8);
            p.add_peer(&all);
            firsts.insert(p.pick(&1, &all, 1, None)[0].piece);
        }
        assert!(firsts.len() >= 5, "{firsts:?}");
    }

    #[test]
    fn never_asks_a_peer_for_what_it_lacks_or_unwanted_pieces() {
        let mut p: PiecePicker<u8> = PiecePicker::new(10, 2 * K, 20 * K, 3).unwrap();
        let has = bf(10, &[1, 3, 5, 7, 9]);
        p.add_peer(&has);
        p.set_wanted(3, false);
        p.set_wanted(8, false);
        let picked = p.pick(&1, &has, 1000, None);
        let pieces: std::collections::BTreeSet<u32> = picked.iter().map(|b| b.piece).collect();
        assert_eq!(pieces.into_iter().collect::<Vec<_>>(), vec![1, 5, 7, 9]);
        assert_eq!(picked.len(), 8);
        // nothing more to give: endgame never duplicates to the same peer
        assert!(p.pick(&1, &has, 1000, None).is_empty());
    }

    #[test]
    fn unwanting_in_flight_returns_cancels() {
        let mut p: PiecePicker<u8> = PiecePicker::new(2, 2 * K, 4 * K, 3).unwrap();
        let all = Bitfield::full(2);
        p.add_peer(&all);
        let picked = p.pick(&1, &all, 1, None);
        let cancels = p.set_wanted(picked[0].piece, false);
        assert_eq!(cancels, vec![(1, picked[0])]);
        assert_eq!(p.block_received(&1, &picked[0]), BlockOutcome::Unrequested);
        assert!(p
            .pick(&1, &all, 10, None)
            .iter()
            .all(|b| b.piece != picked[0].piece));
    }

    #[test]
    fn finishes_started_pieces_first_and_completes() {
        let mut p: PiecePicker<u8> = PiecePicker::new(2, 2 * K, 4 * K, 3).unwrap();
        let all = Bitfield::full(2);
        p.add_peer(&all);
        let a = p.pick(&1, &all, 1, None);
        let b = p.pick(&2, &all, 1, None);
        assert_eq!(
            a[0].piece, b[0].piece,
            "second peer continues the started piece"
        );
        assert_eq!(
            p.block_received(&1, &a[0]),
            BlockOutcome::Accepted {
                piece_complete: false,
                cancel: vec![]
            }
        );
        assert_eq!(
            p.block_received(&2, &b[0]),
            BlockOutcome::Accepted {
                piece_complete: true,
                cancel: vec![]
            }
        );
        assert_eq!(p.block_received(&2, &b[0]), BlockOutcome::Duplicate);
        p.piece_verified(a[0].piece);
        assert_eq!(p.block_received(&2, &b[0]), BlockOutcome::Duplicate);
        assert!(!p.is_complete());
    }

    #[test]
    fn endgame_duplicates_and_cancels() {
        let mut p: PiecePicker<u8> = PiecePicker::new(1, 2 * K, 2 * K, 3).unwrap();
        let all = Bitfield::full(1);
        p.add_peer(&all);
        p.add_peer(&all);
        let a = p.pick(&1, &all, 10, None);
        assert_eq!(a.len(), 2);
        assert!(p.in_endgame());
        let b = p.pick(&2, &all, 10, None);
        assert_eq!(a, b, "endgame asks the second peer for the same blocks");
        assert_eq!(
            p.block_received(&2, &b[0]),
            BlockOutcome::Accepted {
                piece_complete: false,
                cancel: vec![1]
            }
        );
        assert_eq!(p.block_received(&1, &a[0]), BlockOutcome::Duplicate);
    }

    #[test]
    fn failed_requests_and_departed_peers_free_blocks() {
        let mut p: PiecePicker<u8> = PiecePicker::new(1, 2 * K, 2 * K, 3).unwrap();
        let all = Bitfield::full(1);
        p.add_peer(&all);
        let a = p.pick(&1, &all, 10, None);
        p.request_failed(&1, &a[0]);
        p.remove_peer(&1, &all);
        assert_eq!(p.availability(0), 0);
        p.add_peer(&all);
        assert_eq!(p.pick(&2, &all, 10, None), a);
    }

    #[test]
    fn failed_piece_is_refetched_from_one_peer() {
        let mut p: PiecePicker<u8> = PiecePicker::new(1, 2 * K, 2 * K, 3).unwrap();
        let all = Bitfield::full(1);
        p.add_peer(&all);
        p.add_peer(&all);
        let a = p.pick(&1, &all, 1, None);
        let b = p.pick(&2, &all, 1, None);
        p.block_received(&1, &a[0]);
        p.block_received(&2, &b[0]);
        let mut blamed = p.piece_failed(0);
        blamed.sort();
        assert_eq!(blamed, vec![1, 2]);
        let again = p.pick(&2, &all, 1, None);
        assert_eq!(again.len(), 1);
        assert!(
            p.pick(&1, &all, 10, None).is_empty(),
            "the piece belongs to peer 2 now"
        );
        assert_eq!(p.pick(&2, &all, 10, None).len(), 1);
    }

    #[test]
    fn allowed_fast_only_when_choked() {
        let mut p: PiecePicker<u8> = PiecePicker::new(4, K, 4 * K, 3).unwrap();
        let all = Bitfield::full(4);
        p.add_peer(&all);
        let picked = p.pick(&1, &all, 10, Some(&[2]));
        assert_eq!(picked, vec![BlockRef::new(2, 0, BLOCK_SIZE)]);
    }
}
