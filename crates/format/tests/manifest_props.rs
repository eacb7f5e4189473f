//! Manifest laws: encode/decode round trip; seal/unseal round trip; hostile manifests
//! are refused by validation; random bytes never panic the decoder.

use proptest::prelude::*;
use swarmbak_format::manifest::{self, ChunkRef, Entry, Kind, Manifest, PackRef};
use swarmbak_format::InfoHash;

fn name() -> impl Strategy<Value = Vec<u8>> {
    // Any bytes except NUL and '/', never "." or "..": newlines, unicode, spaces welcome.
    proptest::collection::vec(
        any::<u8>().prop_filter("no NUL or /", |b| *b != 0 && *b != b'/'),
        1..12,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

/// A valid manifest: a tree of directories, files (with chunks) and symlinks.
fn manifest() -> impl Strategy<Value = Manifest> {
    (
        proptest::collection::vec(
            (
                name(),
                0u8..3,
                any::<u32>(),
                any::<i64>(),
                0u32..1_000_000_000,
                proptest::collection::vec(0usize..6, 0..4),
                name(),
            ),
            1..40,
        ),
        proptest::collection::vec(any::<[u8; 20]>(), 0..3),
        any::<[u8; 32]>(),
    )
        .prop_map(|(items, snaps, key)| {
            let snapshots: Vec<InfoHash> = snaps.into_iter().map(InfoHash).collect();
            let packs: Vec<PackRef> = (0..=snapshots.len() as u32)
                .map(|s| PackRef {
                    snapshot: s,
                    offset: s as u64 * 1000,
                    len: 999,
                })
                .collect();
            let chunks: Vec<ChunkRef> = (0..6u32)
                .map(|i| ChunkRef {
                    id: [i as u8; 32],
                    pack: i % packs.len() as u32,
                    offset: 8 + i as u64 * 10,
                    stored_len: 10,
                    raw_len: if i % 2 == 0 { 10 } else { 100 + i },
                    codec: if i % 2 == 0 { 0 } else { 1 },
                })
                .collect();
            let mut entries = vec![];
            let mut dirs: Vec<Vec<u8>> = vec![b"root".to_vec()];
            entries.push(Entry {
                path: b"root".to_vec(),
                kind: Kind::Dir,
                mode: 0o755,
                mtime: 1,
                mtime_ns: 2,
                size: 0,
                chunks: vec![],
                target: vec![],
                ino: 3,
                ctime: 4,
                ctime_ns: 5,
            });
            let mut seen = std::collections::HashSet::new();
            for (i, (n, kind, mode, mtime, ns, cidx, target)) in items.into_iter().enumerate() {
                let parent = dirs[i % dirs.len()].clone();
                let mut path = parent.clone();
                path.push(b'/');
                path.extend_from_slice(&n);
                if !seen.insert(path.clone()) {
                    continue;
                }
                let kind = [Kind::File, Kind::Dir, Kind::Symlink][kind as usize];
                let (size, cs): (u64, Vec<u32>) = if kind == Kind::File {
                    (
                        cidx.iter().map(|&c| chunks[c].raw_len as u64).sum(),
                        cidx.iter().map(|&c| c as u32).collect(),
                    )
                } else {
                    (0, vec![])
                };
                if kind == Kind::Dir {
                    dirs.push(path.clone());
                }
                entries.push(Entry {
                    path,
                    kind,
                    mode: mode & 0o7777,
                    mtime,
                    mtime_ns: ns,
                    size,
                    chunks: cs,
                    target: if kind == Kind::Symlink {
                        target
                    } else {
                        vec![]
                    },
                    ino: i as u64,
                    ctime: mtime / 2,
                    ctime_ns: ns / 3,
                });
            }
            Manifest {
                format: 1,
                time: 1_700_000_000,
                time_ns: 5,
                machine_name: "m".into(),
                machine_key: "age1xyz".into(),
                source_paths: vec![b"/home/x/root".to_vec()],
                parents: snapshots.iter().take(1).copied().collect(),
                snapshots,
                chunk_key: key,
                packs,
                chunks,
                entries,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn encode_decode_round_trip(m in manifest()) {
        m.validate().unwrap();
        let enc = m.encode();
        let back = Manifest::decode(&enc).unwrap();
        prop_assert_eq!(&back, &m);
        // Canonical: re-encoding gives the same bytes.
        prop_assert_eq!(back.encode(), enc.clone());
        let sealed = manifest::seal(&enc).unwrap();
        prop_assert_eq!(manifest::unseal(&sealed).unwrap(), enc);
    }

    /// One hostile change to a valid manifest, and validation refuses it.
    #[test]
    fn hostile_changes_are_refused(m in manifest(), which in 0usize..10, at in any::<prop::sample::Index>()) {
        let mut h = m.clone();
        let i = at.index(h.entries.len());
        match which {
            0 => h.entries[i].path = b"root/../../etc/passwd".to_vec(),
            1 => h.entries[i].path = b"/etc/passwd".to_vec(),
            2 => h.entries[i].path.extend_from_slice(b"/\0x"),
            3 => { let e = h.entries[i].clone(); h.entries.push(e); }
            4 => h.entries[i].path = b"elsewhere/file".to_vec(),
            5 => h.entries[i].mode = 0o100644,
            6 => h.entries[i].mtime_ns = 1_000_000_000,
            7 => { h.entries[i].kind = Kind::File; h.entries[i].target.clear(); h.entries[i].chunks = vec![77]; }
            8 => { h.entries[i].kind = Kind::File; h.entries[i].target.clear(); h.entries[i].chunks = vec![0]; h.entries[i].size = 11; }
            _ => h.format = 2,
        }
        prop_assert!(h.validate().is_err(), "accepted hostile change {}", which);
        // Through encode/decode too: decode never accepts what validate would refuse.
        if let Ok(d) = Manifest::decode(&h.encode()) {
            prop_assert!(d.validate().is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Manifest::decode(&b);
        let _ = manifest::unseal(&b);
    }
}

#[test]
fn a_zstd_bomb_is_refused() {
    // 2 GiB of zeros compresses to a few KiB; unseal stops at 1 GiB.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    let zeros = vec![0u8; 1 << 20];
    use std::io::Write;
    for _ in 0..1100 {
        enc.write_all(&zeros).unwrap();
    }
    let z = enc.finish().unwrap();
    let mut sealed = manifest::MANIFEST_MAGIC.to_vec();
    sealed.extend_from_slice(&z);
    let e = manifest::unseal(&sealed).unwrap_err();
    assert!(e.to_string().contains("larger than 1 GiB"), "{e}");
}
