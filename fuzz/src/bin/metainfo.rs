//! `Metainfo::from_bytes` on arbitrary bytes: a `.torrent` as downloaded from a tracker
//! or a peer (BEP 9), before anything trusts it.
//!
//! Invariants: parsing never panics; an accepted torrent's info-hash is the SHA-1 of its
//! raw info dictionary, which lies inside the input; its piece sizes add up to its total
//! length; its files are contiguous; `unsafe_paths` agrees with `PathProblem::of`; and
//! `with_announce` keeps the info-hash (the re-serialised torrent parses the same).

use sha1::{Digest, Sha1};
use swarmbak_metainfo::{Metainfo, PathProblem};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(m) = Metainfo::from_bytes(data) else {
            return;
        };
        let digest: [u8; 20] = Sha1::digest(m.raw_info()).into();
        assert_eq!(digest, m.info_hash());
        assert!(m.as_bytes().len() <= data.len());
        assert_eq!(m.as_bytes(), &data[..m.as_bytes().len()]);
        assert!(m.piece_length() >= 1);
        assert!(!m.pieces().is_empty());
        let mut total = 0u64;
        for i in 0..m.pieces().len() {
            let s = m.piece_size(i).expect("every piece has a size");
            assert!(s >= 1 && s <= m.piece_length());
            total += s;
        }
        assert!(m.piece_size(m.pieces().len()).is_none());
        assert_eq!(total, m.total_length());
        let mut offset = 0u64;
        for f in m.files() {
            assert_eq!(f.offset, offset);
            assert!(!f.path.is_empty());
            offset += f.length;
        }
        assert_eq!(offset, m.total_length());
        for u in m.unsafe_paths() {
            assert_eq!(PathProblem::of(&u.component), Some(u.problem));
        }
        if let Some(p) = m.swarmbak() {
            assert!(p.k >= 1 && p.m >= 1);
            assert_eq!(p.stripes * u64::from(p.k + p.m), m.pieces().len() as u64);
        }
        for announce in [None, Some("http://tracker.example/announce")] {
            let again = Metainfo::from_bytes(&m.with_announce(announce))
                .expect("with_announce's output parses");
            assert_eq!(again.info_hash(), m.info_hash());
            assert_eq!(again.files(), m.files());
            assert_eq!(again.announce(), announce);
        }
    });
}
