//! Reading `.torrent` files.

use std::collections::BTreeMap;
use std::ops::Range;

use sha1::{Digest, Sha1};
use swarmbak_bencode::{decode_prefix_with, Dict, Limits, OwnedValue, Value};

use crate::error::MetainfoError;
use crate::paths::{PathProblem, UnsafePath};
use crate::swarmbak::SwarmbakParams;
use crate::{MAX_PIECES, MAX_PIECE_LENGTH};

/// One file of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components as they appear in the torrent (`path.utf-8` if it is a list,
    /// else `path`), below the torrent's name. For a single-file torrent, one component:
    /// the name.
    pub path: Vec<Vec<u8>>,
    /// Length in bytes.
    pub length: u64,
    /// Offset of the file's first byte in the torrent's concatenated data.
    pub offset: u64,
    /// `attr` as given (BEP 47: `p` padding, `l` symlink, `x` executable, `h` hidden).
    pub attr: Vec<u8>,
    /// `symlink path` components, when `attr` holds `l`.
    pub symlink: Option<Vec<Vec<u8>>>,
}

impl FileEntry {
    /// A BEP 47 padding file (`attr` holds `p`).
    pub fn is_padding(&self) -> bool {
        self.attr.contains(&b'p')
    }
}

/// A parsed v1 (or hybrid, read through its v1 part) torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    raw: Vec<u8>,
    info: Range<usize>,
    info_hash: [u8; 20],
    outer: BTreeMap<Vec<u8>, Vec<u8>>,
    announce: Option<String>,
    announce_list: Vec<Vec<String>>,
    comment: Option<String>,
    created_by: Option<String>,
    creation_date: Option<i64>,
    name: Vec<u8>,
    piece_length: u64,
    pieces: Vec<[u8; 20]>,
    files: Vec<FileEntry>,
    multi_file: bool,
    total_length: u64,
    private: bool,
    hybrid: bool,
    swarmbak: Option<SwarmbakParams>,
}

/// The decoder limits libtorrent 2.0 uses for torrents (`load_torrent_limits`: depth 100,
/// 3,000,000 tokens).
const LIMITS: Limits = Limits {
    max_depth: 100,
    max_items: 3_000_000,
};

fn text(v: Option<&Value<'_>>) -> Option<String> {
    v.and_then(Value::as_bytes)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// `key.utf-8` if it is a string, else `key` if it is a string (libtorrent's order).
fn utf8_variant<'v, 'a>(d: &'v Dict<'a>, key: &str) -> Option<&'v Value<'a>> {
    let alt = format!("{key}.utf-8");
    d.get(alt.as_bytes())
        .filter(|v| v.as_bytes().is_some())
        .or_else(|| d.get(key.as_bytes()))
}

/// Same for lists (`path.utf-8` / `path`).
fn utf8_list<'v, 'a>(d: &'v Dict<'a>, key: &str) -> Option<&'v Value<'a>> {
    let alt = format!("{key}.utf-8");
    d.get(alt.as_bytes())
        .filter(|v| v.as_list().is_some())
        .or_else(|| d.get(key.as_bytes()))
}

fn string_list(v: &Value<'_>) -> Option<Vec<Vec<u8>>> {
    v.as_list()?
        .iter()
        .map(|c| c.as_bytes().map(<[u8]>::to_vec))
        .collect()
}

/// Would libtorrent's sanitiser leave nothing of this single-file name? libtorrent 2.0.8
/// treats the whole name as one path element: it drops `/`, `\\` and NUL bytes, then
/// drops the element if what is left is empty, `.` or `..` ("missing name"). So `./..`
/// becomes `...` and is accepted, while `/..` and `.\0.` are rejected (checked with
/// `torrent_info(bytes)`; control characters are replaced by `_`, not dropped).
fn sanitizes_to_empty(name: &[u8]) -> bool {
    let kept: Vec<u8> = name
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'/' | b'\\' | 0))
        .collect();
    matches!(kept.as_slice(), b"" | b"." | b"..")
}

/// Are the keys of every dictionary in `v` (nested ones included, inside lists too)
/// strictly increasing? libtorrent's `has_soft_error` check on the info dictionary.
fn canonical_key_order(v: &Value<'_>) -> bool {
    match v {
        Value::Dict(d) => d.is_sorted() && d.iter().all(|(_, v)| canonical_key_order(v)),
        Value::List(l) => l.iter().all(canonical_key_order),
        _ => true,
    }
}

impl Metainfo {
    /// Parses a `.torrent`.
    ///
    /// The rules, each checked by hand against libtorrent 2.0.8's `torrent_info(bytes)`
    /// (python3-libtorrent on this machine) and tested here:
    /// - bencode as [`swarmbak_bencode::decode`], with libtorrent's limits (nesting depth
    ///   100, so 99 nested containers; 3,000,000 values). Unsorted and repeated keys are
    ///   accepted, the first of repeated keys wins (libtorrent: same). Bytes after the
    ///   torrent's dictionary are ignored (libtorrent: same). **Differs:** libtorrent
    ///   accepts `i03e`, `i-0e` and `03:abc`; this reader rejects them, as transmission
    ///   does.
    /// - the top level must be a dictionary, `info` a dictionary (libtorrent: "torrent
    ///   file is not a dictionary", "missing or invalid 'info' section").
    /// - info-hash: SHA-1 of the `info` dictionary's bytes exactly as they appear.
    /// - `meta version` (libtorrent truncates the integer to 32 bits; a non-integer counts
    ///   as absent): absent, 0, negative or 1 make a v1 torrent, and then a `file tree`
    ///   dictionary is rejected ("contains v2 keys but does not specify meta version
    ///   2"). 2 marks a hybrid torrent, read through its v1 keys (a `file tree`
    ///   dictionary must be there; the v2 hashes and the v2 file list are not checked);
    ///   without `pieces` it is v2-only and rejected. Above 2 is rejected. With a
    ///   positive `meta version`, every dictionary inside `info` must have sorted,
    ///   unique keys (libtorrent: "invalid bencoding"; without one, unsorted keys are
    ///   fine). Found by the libtorrent differential test (interop-tests): an earlier
    ///   version of this reader rejected `meta version` 0 and 1 with sorted keys, which
    ///   libtorrent 2.0.8 accepts.
    /// - `piece length`: an integer from 1 to 2^30 - 1 (libtorrent: 0, -1, 2^30 and
    ///   non-integers rejected; 1, 1000 and 2^30 - 1 accepted: no 16 KiB multiple needed).
    /// - `name.utf-8` if it is a string, else `name`, must be a string (libtorrent:
    ///   "missing name"; an empty `name.utf-8` is *not* skipped for `name`). For a
    ///   single-file torrent it must not be empty or only `.`, `..` and separators
    ///   (libtorrent rejects "", ".", "..", "/"); a multi-file torrent may have any
    ///   name (libtorrent renames it). Unsafe names are reported by
    ///   [`unsafe_paths`](Metainfo::unsafe_paths).
    /// - a `files` list makes a multi-file torrent (even beside `length`; a `files` that
    ///   is not a list is ignored); else `length` must be an integer. Lengths must be
    ///   integers ≥ 0, the total from 1 to 2^63 - 1 (libtorrent: "invalid length" for
    ///   negative, missing, non-integer, all-zero and overflowing lengths). `files` must
    ///   not be empty ("no files in torrent"); each entry must be a dictionary with a
    ///   non-empty `path.utf-8`/`path` list of strings (libtorrent: rejected when the
    ///   list is empty, not a list, or holds a non-string). Components are kept raw and
    ///   unsafe ones reported, not rejected (libtorrent rewrites `..` to `_.1`, `a/b`
    ///   to `ab` and so on). `attr` is kept; `symlink path` is read when `attr` holds `l`.
    /// - `pieces`: a string whose length is a multiple of 20, holding exactly
    ///   ceil(total / piece length) hashes, at most 2^21 of them (libtorrent: "incorrect
    ///   number of piece hashes", "too many pieces").
    /// - `private`: a nonzero integer means private (libtorrent: 2 is private, "1" is
    ///   not).
    /// - `announce`, `announce-list`, `comment`, `created by`, `creation date` are
    ///   optional and ignored when malformed (libtorrent: same).
    /// - `swarmbak`: see [`SwarmbakParams`]; malformed is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        let (top, used) = decode_prefix_with(bytes, LIMITS)?;
        let raw = &bytes[..used];
        let top_dict = top
            .as_dict()
            .ok_or(MetainfoError::NotADictionary(top.type_name()))?;
        let info_value = top_dict.get(b"info").ok_or(MetainfoError::MissingInfo)?;
        let info = info_value.as_dict().ok_or(MetainfoError::MissingInfo)?;
        let info_raw = info.raw();
        let info_start = info_raw.as_ptr() as usize - raw.as_ptr() as usize;
        let info_range = info_start..info_start + info_raw.len();
        let info_hash: [u8; 20] = Sha1::digest(info_raw).into();

        // Hybrid?
        let mut hybrid = false;
        let has_file_tree = info.get(b"file tree").and_then(Value::as_dict).is_some();
        let version = info.get(b"meta version").and_then(Value::as_int);
        // libtorrent reads it with `int(dict_find_int_value("meta version", -1))`.
        let version32 = version.map_or(-1, |v| v as i32);
        if version32 > 2 {
            return Err(MetainfoError::UnsupportedMetaVersion(version.unwrap_or(-1)));
        }
        if version32 == 2 {
            if !has_file_tree {
                return Err(MetainfoError::MissingFileTree);
            }
            if info.get(b"pieces").is_none() {
                return Err(MetainfoError::V2Only);
            }
            hybrid = true;
        } else if has_file_tree {
            return Err(MetainfoError::FileTreeWithoutMetaVersion);
        }
        if version32 > 0 && !canonical_key_order(info_value) {
            return Err(MetainfoError::UnsupportedMetaVersion(version.unwrap_or(-1)));
        }

        let piece_length = match info.get(b"piece length") {
            None => return Err(MetainfoError::BadPieceLength("is missing".into())),
            Some(Value::Int(n)) if (1..=MAX_PIECE_LENGTH as i64).contains(n) => *n as u64,
            Some(Value::Int(n)) => return Err(MetainfoError::BadPieceLength(format!("is {n}"))),
            Some(v) => {
                return Err(MetainfoError::BadPieceLength(format!(
                    "is a {}",
                    v.type_name()
                )))
            }
        };

        let name = match utf8_variant(info, "name") {
            None => return Err(MetainfoError::BadName("is missing".into())),
            Some(Value::Bytes(b)) => b.to_vec(),
            Some(v) => return Err(MetainfoError::BadName(format!("is a {}", v.type_name()))),
        };

        let (files, multi_file) = match info.get(b"files").and_then(Value::as_list) {
            Some(list) => (Self::parse_files(list)?, true),
            None => {
                let length = match info.get(b"length") {
                    Some(Value::Int(n)) => *n,
                    _ => return Err(MetainfoError::MissingLength),
                };
                if length < 0 {
                    return Err(MetainfoError::NegativeLength("the file".into(), length));
                }
                if sanitizes_to_empty(&name) {
                    return Err(MetainfoError::BadName(format!(
                        "{:?} is not usable as a file name",
                        String::from_utf8_lossy(&name)
                    )));
                }
                let file = FileEntry {
                    path: vec![name.clone()],
                    length: length as u64,
                    offset: 0,
                    attr: Vec::new(),
                    symlink: None,
                };
                (vec![file], false)
            }
        };
        let total_length = files.last().map_or(0, |f| f.offset + f.length);
        if total_length == 0 {
            return Err(MetainfoError::Empty);
        }

        let pieces_bytes = info
            .get(b"pieces")
            .and_then(Value::as_bytes)
            .ok_or(MetainfoError::MissingPieces)?;
        if pieces_bytes.len() % 20 != 0 {
            return Err(MetainfoError::PiecesNotMultipleOf20(pieces_bytes.len()));
        }
        let expected = total_length.div_ceil(piece_length);
        let hashes = (pieces_bytes.len() / 20) as u64;
        if expected > MAX_PIECES {
            return Err(MetainfoError::TooManyPieces(expected));
        }
        if hashes != expected {
            return Err(MetainfoError::PieceCountMismatch {
                hashes,
                expected,
                total: total_length,
                piece_length,
            });
        }
        let pieces = pieces_bytes
            .chunks_exact(20)
            .map(|c| {
                let mut h = [0u8; 20];
                h.copy_from_slice(c);
                h
            })
            .collect();

        let private = matches!(info.get(b"private"), Some(Value::Int(n)) if *n != 0);

        let announce = text(top_dict.get(b"announce"));
        let announce_list = top_dict
            .get(b"announce-list")
            .and_then(Value::as_list)
            .map(|tiers| {
                tiers
                    .iter()
                    .filter_map(Value::as_list)
                    .map(|tier| {
                        tier.iter()
                            .filter_map(|u| text(Some(u)))
                            .collect::<Vec<_>>()
                    })
                    .filter(|tier| !tier.is_empty())
                    .collect()
            })
            .unwrap_or_default();

        // Outer keys other than the ones `with_announce` rewrites, pre-encoded.
        let mut outer = BTreeMap::new();
        for (k, v) in top_dict.iter() {
            if k == b"info" || k == b"announce" || k == b"announce-list" {
                continue;
            }
            outer.entry(k.to_vec()).or_insert_with(|| match v.raw() {
                Some(r) => r.to_vec(),
                // Integers and strings are only accepted in canonical form.
                None => v.to_owned_value().to_bytes(),
            });
        }

        let swarmbak = match info.get(b"swarmbak") {
            None => None,
            Some(v) => Some(SwarmbakParams::parse(
                v,
                multi_file,
                piece_length,
                total_length,
                hashes,
            )?),
        };

        Ok(Metainfo {
            raw: raw.to_vec(),
            info: info_range,
            info_hash,
            outer,
            announce,
            announce_list,
            comment: text(utf8_variant(top_dict, "comment")),
            created_by: text(top_dict.get(b"created by")),
            creation_date: top_dict.get(b"creation date").and_then(Value::as_int),
            name,
            piece_length,
            pieces,
            files,
            multi_file,
            total_length,
            private,
            hybrid,
            swarmbak,
        })
    }

    fn parse_files(list: &swarmbak_bencode::List<'_>) -> Result<Vec<FileEntry>, MetainfoError> {
        if list.is_empty() {
            return Err(MetainfoError::NoFiles);
        }
        let mut files = Vec::with_capacity(list.len());
        let mut offset: u64 = 0;
        for (index, entry) in list.iter().enumerate() {
            let bad = |what: String| MetainfoError::BadFile { index, what };
            let d = entry
                .as_dict()
                .ok_or_else(|| bad(format!("is a {}, not a dictionary", entry.type_name())))?;
            let length = match d.get(b"length") {
                Some(Value::Int(n)) if *n >= 0 => *n as u64,
                Some(Value::Int(n)) => {
                    return Err(MetainfoError::NegativeLength(
                        format!("`files` entry {index}"),
                        *n,
                    ))
                }
                Some(v) => return Err(bad(format!("`length` is a {}", v.type_name()))),
                None => return Err(bad("has no `length`".into())),
            };
            let path = utf8_list(d, "path")
                .and_then(string_list)
                .ok_or_else(|| bad("`path` is missing or not a list of strings".into()))?;
            if path.is_empty() {
                return Err(bad("`path` is empty".into()));
            }
            let attr = d
                .get(b"attr")
                .and_then(Value::as_bytes)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            let symlink = if attr.contains(&b'l') {
                utf8_list(d, "symlink path").and_then(string_list)
            } else {
                None
            };
            files.push(FileEntry {
                path,
                length,
                offset,
                attr,
                symlink,
            });
            offset = offset
                .checked_add(length)
                .filter(|t| *t <= i64::MAX as u64)
                .ok_or(MetainfoError::TotalTooLarge)?;
        }
        Ok(files)
    }

    /// The info-hash: SHA-1 of the info dictionary's bytes as they appear in the file.
    pub fn info_hash(&self) -> [u8; 20] {
        self.info_hash
    }

    /// The info-hash in lower-case hex (40 characters).
    pub fn info_hash_hex(&self) -> String {
        hex::encode(self.info_hash)
    }

    /// The info dictionary's bytes, exactly as in the file.
    pub fn raw_info(&self) -> &[u8] {
        &self.raw[self.info.clone()]
    }

    /// The whole torrent as parsed (without any bytes that followed it).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// `announce`, if it is a string.
    pub fn announce(&self) -> Option<&str> {
        self.announce.as_deref()
    }

    /// `announce-list` tiers (BEP 12), malformed tiers and URLs dropped.
    pub fn announce_list(&self) -> &[Vec<String>] {
        &self.announce_list
    }

    /// `comment.utf-8` or `comment`.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// `created by`.
    pub fn created_by(&self) -> Option<&str> {
        self.created_by.as_deref()
    }

    /// `creation date`, Unix seconds.
    pub fn creation_date(&self) -> Option<i64> {
        self.creation_date
    }

    /// `name.utf-8` or `name`, raw.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// `piece length` in bytes.
    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    /// The SHA-1 of each piece.
    pub fn pieces(&self) -> &[[u8; 20]] {
        &self.pieces
    }

    /// Length of piece `index` (the last one may be short).
    pub fn piece_size(&self, index: usize) -> Option<u64> {
        let start = (index as u64).checked_mul(self.piece_length)?;
        (index < self.pieces.len()).then(|| (self.total_length - start).min(self.piece_length))
    }

    /// The files, in order (one for a single-file torrent).
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Was it a multi-file torrent (`files` list)?
    pub fn is_multi_file(&self) -> bool {
        self.multi_file
    }

    /// Sum of the file lengths (padding files included).
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// `private` is a nonzero integer.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// A hybrid v1+v2 torrent (read through its v1 part).
    pub fn is_hybrid(&self) -> bool {
        self.hybrid
    }

    /// swarmbak's parameters, `None` for a plain torrent.
    pub fn swarmbak(&self) -> Option<&SwarmbakParams> {
        self.swarmbak.as_ref()
    }

    /// Every name, path or symlink-target component that must not be used as it is on
    /// disk: empty, `.`, `..`, absolute, holding a separator or a NUL.
    pub fn unsafe_paths(&self) -> Vec<UnsafePath> {
        let mut out = Vec::new();
        let mut check = |file: Option<usize>, in_symlink_target: bool, c: &[u8]| {
            if let Some(problem) = PathProblem::of(c) {
                out.push(UnsafePath {
                    file,
                    in_symlink_target,
                    component: c.to_vec(),
                    problem,
                });
            }
        };
        check(None, false, &self.name);
        if self.multi_file {
            for (i, f) in self.files.iter().enumerate() {
                for c in &f.path {
                    check(Some(i), false, c);
                }
                for c in f.symlink.iter().flatten() {
                    check(Some(i), true, c);
                }
            }
        }
        out
    }

    /// The same torrent with `announce` set to `announce` (or removed), and any
    /// `announce-list` removed (BEP 12 clients prefer it over `announce`). The info
    /// dictionary is copied byte for byte, so the info-hash does not change; the other
    /// top-level keys are kept (sorted, the first of repeated keys).
    pub fn with_announce(&self, announce: Option<&str>) -> Vec<u8> {
        let mut entries: BTreeMap<&[u8], std::borrow::Cow<'_, [u8]>> = self
            .outer
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice().into()))
            .collect();
        entries.insert(b"info", self.raw_info().into());
        if let Some(url) = announce {
            entries.insert(b"announce", OwnedValue::str(url).to_bytes().into());
        }
        let len = 2 + entries
            .iter()
            .map(|(k, v)| k.len() + 21 + v.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.push(b'd');
        for (k, v) in entries {
            out.extend_from_slice(k.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(k);
            out.extend_from_slice(&v);
        }
        out.push(b'e');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECES: &[u8] = b"6:pieces20:aaaaaaaaaaaaaaaaaaaa";

    /// A single-file torrent whose info dictionary is `before`, the four required keys,
    /// then `after` (raw bencode), so the caller controls the key order.
    fn single(before: &[u8], name: &[u8], after: &[u8]) -> Vec<u8> {
        let mut v = b"d4:infod".to_vec();
        v.extend_from_slice(before);
        v.extend_from_slice(b"6:lengthi5e4:name");
        v.extend_from_slice(format!("{}:", name.len()).as_bytes());
        v.extend_from_slice(name);
        v.extend_from_slice(b"12:piece lengthi16384e");
        v.extend_from_slice(PIECES);
        v.extend_from_slice(after);
        v.extend_from_slice(b"ee");
        v
    }

    /// `meta version` between `length` and `name`: every key sorted.
    fn with_meta_version(v: &[u8], after: &[u8]) -> Vec<u8> {
        let mut b = b"d4:infod6:lengthi5e12:meta version".to_vec();
        b.extend_from_slice(v);
        b.extend_from_slice(b"4:name1:x12:piece lengthi16384e");
        b.extend_from_slice(PIECES);
        b.extend_from_slice(after);
        b.extend_from_slice(b"ee");
        b
    }

    // Each expectation below is what libtorrent 2.0.8's torrent_info(bytes) did with the
    // same bytes (found by interop-tests/tests/metainfo_differential.rs).
    #[test]
    fn meta_version_zero_negative_and_one_are_v1() {
        for v in [
            &b"i0e"[..],
            b"i-1e",
            b"i-7e",
            b"i1e",
            b"i4294967297e",
            b"1:2",
        ] {
            let m = Metainfo::from_bytes(&with_meta_version(v, b""))
                .unwrap_or_else(|e| panic!("meta version {}: {e}", String::from_utf8_lossy(v)));
            assert!(!m.is_hybrid());
        }
        for v in [&b"i3e"[..], b"i99e"] {
            assert!(matches!(
                Metainfo::from_bytes(&with_meta_version(v, b"")),
                Err(MetainfoError::UnsupportedMetaVersion(_))
            ));
        }
        // 2^32 + 2 is 2 to libtorrent (int truncation): a hybrid without a file tree.
        assert_eq!(
            Metainfo::from_bytes(&with_meta_version(b"i4294967298e", b"")).unwrap_err(),
            MetainfoError::MissingFileTree
        );
    }

    #[test]
    fn positive_meta_version_needs_sorted_keys_everywhere_in_info() {
        // Unsorted top level of info: `meta version` first.
        let unsorted = single(b"12:meta versioni1e", b"x", b"");
        assert!(matches!(
            Metainfo::from_bytes(&unsorted),
            Err(MetainfoError::UnsupportedMetaVersion(1))
        ));
        // Sorted info, but a nested dictionary (in a list) is not.
        let nested = with_meta_version(b"i1e", b"2:zzld1:bi1e1:ai1eee");
        assert!(Metainfo::from_bytes(&nested).is_err());
        let dup = with_meta_version(b"i1e", b"2:zzd1:ai1e1:ai1ee");
        assert!(Metainfo::from_bytes(&dup).is_err());
        // Without a positive meta version the same orders are fine.
        assert!(Metainfo::from_bytes(&with_meta_version(b"i0e", b"2:zzld1:bi1e1:ai1eee")).is_ok());
        assert!(Metainfo::from_bytes(&single(b"2:zzi1e", b"x", b"")).is_ok());
        // Unsorted keys outside info do not matter.
        let mut outer = with_meta_version(b"i1e", b"");
        outer.pop();
        outer.extend_from_slice(b"1:ai1ee");
        assert!(Metainfo::from_bytes(&outer).is_ok());
    }

    #[test]
    fn file_tree_needs_meta_version_2() {
        // `file tree` sorts before `length`.
        let ft = single(
            b"9:file treed1:ad0:d11:pieces root32:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaeee",
            b"x",
            b"",
        );
        assert_eq!(
            Metainfo::from_bytes(&ft).unwrap_err(),
            MetainfoError::FileTreeWithoutMetaVersion
        );
        // A `file tree` that is not a dictionary is ignored.
        assert!(Metainfo::from_bytes(&single(b"9:file treei1e", b"x", b"")).is_ok());
    }

    #[test]
    fn single_file_name_is_one_sanitised_element() {
        for ok in [
            &b"./.."[..],
            b"../.",
            b"a/..",
            b"../..",
            b".\\..",
            b"...",
            b"\0a",
            b".\0a",
            b"a\0",
            b". ",
        ] {
            let m = Metainfo::from_bytes(&single(b"", ok, b""))
                .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(ok)));
            assert_eq!(m.name(), ok);
        }
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"/",
            b"./",
            b"/./",
            b"/..",
            b"//",
            b"\\",
            b"\0",
            b".\0.",
            b"..\0",
        ] {
            assert!(
                matches!(
                    Metainfo::from_bytes(&single(b"", bad, b"")),
                    Err(MetainfoError::BadName(_))
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
