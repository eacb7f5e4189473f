//! The manifest decoder (`format::manifest`) on arbitrary bytes: what a restore reads
//! after decrypting a snapshot's sealed manifest, then checks with `Manifest::validate`
//! before acting on it.
//!
//! Input: the bencoded manifest (what `unseal` returns). `unseal` itself is not fuzzed
//! here: it is zstd's decoder, capped at `MAX_MANIFEST` (1 GiB), so a few bytes can
//! legitimately take seconds to expand.
//!
//! Invariants: nothing panics; a decoded manifest re-encodes to canonical bencode that
//! decodes to the same manifest; a validated one has only safe paths, each after its
//! parent directory, with chunk, pack and snapshot references in range.

use swarmbak_format::manifest::{check_path, Kind, Manifest};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(m) = Manifest::decode(data) else {
            return;
        };
        let encoded = m.encode();
        let again = Manifest::decode(&encoded).expect("our encoding decodes");
        assert_eq!(again, m);
        if m.validate().is_err() {
            return;
        }
        let mut dirs = std::collections::HashSet::new();
        for e in &m.entries {
            assert!(check_path(&e.path).is_ok());
            if let Some(i) = e.path.iter().rposition(|&b| b == b'/') {
                assert!(
                    dirs.contains(&e.path[..i]),
                    "parent of an entry is not a directory"
                );
            }
            if e.kind == Kind::Dir {
                dirs.insert(e.path.as_slice());
            }
            for &c in &e.chunks {
                let c = &m.chunks[c as usize];
                let p = &m.packs[c.pack as usize];
                assert!(p.snapshot as usize <= m.snapshots.len());
            }
        }
    });
}
