//! One test per accept/reject rule. Each rule was checked by hand against libtorrent
//! 2.0.8 (`/usr/bin/python3 -c 'import libtorrent'`), as noted on `Metainfo::from_bytes`.

use sha1::{Digest, Sha1};
use swarmbak_bencode::OwnedValue;
use swarmbak_metainfo::{Metainfo, MetainfoError, PathProblem};

const H: [u8; 20] = [0u8; 20];

/// Minimal bencode writer that keeps key order as given (for unsorted input).
enum B<'a> {
    I(i64),
    S(&'a [u8]),
    L(Vec<B<'a>>),
    D(Vec<(&'a str, B<'a>)>),
}

impl B<'_> {
    fn enc(&self, out: &mut Vec<u8>) {
        match self {
            B::I(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            B::S(s) => {
                out.extend_from_slice(format!("{}:", s.len()).as_bytes());
                out.extend_from_slice(s);
            }
            B::L(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.enc(out));
                out.push(b'e');
            }
            B::D(d) => {
                out.push(b'd');
                for (k, v) in d {
                    B::S(k.as_bytes()).enc(out);
                    v.enc(out);
                }
                out.push(b'e');
            }
        }
    }
    fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.enc(&mut v);
        v
    }
}

fn s(x: &str) -> B<'_> {
    B::S(x.as_bytes())
}

/// A valid single-file info dict, with `extra` entries appended and `drop` keys removed.
fn info<'a>(extra: Vec<(&'a str, B<'a>)>, drop: &[&str]) -> B<'a> {
    let mut d: Vec<(&str, B<'_>)> = vec![
        ("length", B::I(10)),
        ("name", s("a")),
        ("piece length", B::I(16384)),
        ("pieces", B::S(&H)),
    ];
    d.retain(|(k, _)| !drop.contains(k) && !extra.iter().any(|(e, _)| e == k));
    d.extend(extra);
    B::D(d)
}

fn torrent(info: B<'_>) -> Vec<u8> {
    B::D(vec![("info", info)]).bytes()
}

fn parse(info: B<'_>) -> Result<Metainfo, MetainfoError> {
    Metainfo::from_bytes(&torrent(info))
}

#[test]
fn minimal_single_file() {
    let m = parse(info(vec![], &[])).unwrap();
    assert_eq!(m.name(), b"a");
    assert_eq!(m.piece_length(), 16384);
    assert_eq!(m.pieces(), &[H]);
    assert_eq!(m.total_length(), 10);
    assert_eq!(m.files().len(), 1);
    assert_eq!(m.files()[0].path, vec![b"a".to_vec()]);
    assert!(!m.is_multi_file() && !m.is_private() && !m.is_hybrid());
    assert!(m.swarmbak().is_none());
    assert!(m.unsafe_paths().is_empty());
    assert_eq!(m.piece_size(0), Some(10));
    assert_eq!(m.piece_size(1), None);
    // libtorrent 2.0.8 gives d31508817034d823cd2a795e829b295a311093e7 for this torrent.
    assert_eq!(
        m.info_hash_hex(),
        "d31508817034d823cd2a795e829b295a311093e7"
    );
}

#[test]
fn info_hash_is_over_the_raw_unsorted_info_dict() {
    let i = B::D(vec![
        ("name", s("a")),
        ("length", B::I(10)),
        ("pieces", B::S(&H)),
        ("piece length", B::I(16384)),
    ]);
    let raw = i.bytes();
    let m = parse(i).unwrap();
    assert_eq!(m.raw_info(), &raw[..]);
    let expect: [u8; 20] = Sha1::digest(&raw).into();
    assert_eq!(m.info_hash(), expect);
    // Not the hash of the sorted re-encoding (libtorrent: bcd5316b..., not d3150881...).
    assert_eq!(
        m.info_hash_hex(),
        "bcd5316b3dc70855a35c3de47e39a8682b0b41af"
    );
}

#[test]
fn duplicate_keys_first_wins() {
    let mut raw =
        b"d4:infod6:lengthi10e6:lengthi99999e4:name1:a12:piece lengthi16384e6:pieces20:".to_vec();
    raw.extend_from_slice(&H);
    raw.extend_from_slice(b"ee");
    let m = Metainfo::from_bytes(&raw).unwrap();
    assert_eq!(m.total_length(), 10);
}

#[test]
fn trailing_bytes_after_the_torrent_are_ignored() {
    let mut raw = torrent(info(vec![], &[]));
    let len = raw.len();
    raw.extend_from_slice(b"xyz");
    let m = Metainfo::from_bytes(&raw).unwrap();
    assert_eq!(m.as_bytes().len(), len);
}

#[test]
fn non_canonical_numbers_are_rejected_unlike_libtorrent() {
    let mut raw = b"d4:infod6:lengthi010e4:name1:a12:piece lengthi16384e6:pieces20:".to_vec();
    raw.extend_from_slice(&H);
    raw.extend_from_slice(b"ee");
    assert!(matches!(
        Metainfo::from_bytes(&raw),
        Err(MetainfoError::Bencode(_))
    ));
}

#[test]
fn top_level_and_info_must_be_dicts() {
    assert_eq!(
        Metainfo::from_bytes(b"li1ee"),
        Err(MetainfoError::NotADictionary("list"))
    );
    assert_eq!(
        Metainfo::from_bytes(b"d1:ai1ee"),
        Err(MetainfoError::MissingInfo)
    );
    assert_eq!(
        Metainfo::from_bytes(b"d4:infoli1eee"),
        Err(MetainfoError::MissingInfo)
    );
    assert!(matches!(
        Metainfo::from_bytes(b"d4:info"),
        Err(MetainfoError::Bencode(_))
    ));
}

#[test]
fn nesting_depth_like_libtorrent() {
    // libtorrent: 98 lists inside the top dict load, 99 fail.
    let nest = |n: usize| {
        let mut raw = b"d1:x".to_vec();
        raw.extend(std::iter::repeat_n(b'l', n));
        raw.extend(std::iter::repeat_n(b'e', n));
        let t = torrent(info(vec![], &[]));
        raw.extend_from_slice(&t[1..]);
        raw
    };
    assert!(Metainfo::from_bytes(&nest(98)).is_ok());
    assert!(matches!(
        Metainfo::from_bytes(&nest(99)),
        Err(MetainfoError::Bencode(
            swarmbak_bencode::DecodeError::DepthLimit { .. }
        ))
    ));
}

#[test]
fn piece_length_rules() {
    for bad in [0, -1, 1 << 30, (1 << 31) - 1] {
        assert!(
            matches!(
                parse(info(vec![("piece length", B::I(bad))], &[])),
                Err(MetainfoError::BadPieceLength(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        parse(info(vec![("piece length", s("16384"))], &[])),
        Err(MetainfoError::BadPieceLength(_))
    ));
    assert!(matches!(
        parse(info(vec![], &["piece length"])),
        Err(MetainfoError::BadPieceLength(_))
    ));
    // Not a multiple of 16 KiB is fine for v1; so are 1 and 2^30 - 1.
    let h10 = [0u8; 200];
    assert!(parse(info(
        vec![("piece length", B::I(1)), ("pieces", B::S(&h10))],
        &[]
    ))
    .is_ok());
    assert!(parse(info(vec![("piece length", B::I(1000))], &[])).is_ok());
    assert!(parse(info(vec![("piece length", B::I((1 << 30) - 1))], &[])).is_ok());
    let e = parse(info(vec![("piece length", B::I(0))], &[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`piece length` is 0; it must be an integer from 1 to 1073741823"
    );
}

#[test]
fn pieces_rules() {
    let h41 = [0u8; 41];
    let e = parse(info(vec![("pieces", B::S(&h41))], &[])).unwrap_err();
    assert_eq!(e, MetainfoError::PiecesNotMultipleOf20(41));
    assert_eq!(e.to_string(), "`pieces` is 41 bytes, not a multiple of 20");
    let h40 = [0u8; 40];
    assert_eq!(
        parse(info(vec![("pieces", B::S(&h40))], &[])).unwrap_err(),
        MetainfoError::PieceCountMismatch {
            hashes: 2,
            expected: 1,
            total: 10,
            piece_length: 16384
        }
    );
    assert!(matches!(
        parse(info(vec![("pieces", B::S(b""))], &[])),
        Err(MetainfoError::PieceCountMismatch { hashes: 0, .. })
    ));
    assert_eq!(
        parse(info(vec![], &["pieces"])).unwrap_err(),
        MetainfoError::MissingPieces
    );
    assert_eq!(
        parse(info(vec![("pieces", B::I(5))], &[])).unwrap_err(),
        MetainfoError::MissingPieces
    );
    // Exactly at a piece boundary, and one byte over.
    let h2 = [0u8; 40];
    assert!(parse(info(
        vec![("length", B::I(32768)), ("pieces", B::S(&h2))],
        &[]
    ))
    .is_ok());
    assert!(parse(info(
        vec![("length", B::I(32769)), ("pieces", B::S(&h2))],
        &[]
    ))
    .is_err());
}

#[test]
fn too_many_pieces() {
    // libtorrent: 2^21 pieces load, 2^21 + 1 do not.
    let n = (1usize << 21) + 1;
    let hashes = vec![0u8; n * 20];
    assert_eq!(
        parse(info(
            vec![
                ("length", B::I(n as i64)),
                ("piece length", B::I(1)),
                ("pieces", B::S(&hashes))
            ],
            &[]
        ))
        .unwrap_err(),
        MetainfoError::TooManyPieces(n as u64)
    );
    let ok = &hashes[..(n - 1) * 20];
    assert!(parse(info(
        vec![
            ("length", B::I(n as i64 - 1)),
            ("piece length", B::I(1)),
            ("pieces", B::S(ok))
        ],
        &[]
    ))
    .is_ok());
}

#[test]
fn length_rules() {
    assert_eq!(
        parse(info(vec![("length", B::I(-1))], &[])).unwrap_err(),
        MetainfoError::NegativeLength("the file".into(), -1)
    );
    assert_eq!(
        parse(info(vec![("length", B::I(0)), ("pieces", B::S(b""))], &[])).unwrap_err(),
        MetainfoError::Empty
    );
    assert_eq!(
        parse(info(vec![("length", s("10"))], &[])).unwrap_err(),
        MetainfoError::MissingLength
    );
    assert_eq!(
        parse(info(vec![], &["length"])).unwrap_err(),
        MetainfoError::MissingLength
    );
}

#[test]
fn name_rules() {
    assert!(matches!(
        parse(info(vec![], &["name"])),
        Err(MetainfoError::BadName(_))
    ));
    assert!(matches!(
        parse(info(vec![("name", B::I(5))], &[])),
        Err(MetainfoError::BadName(_))
    ));
    // libtorrent refuses these single-file names.
    for bad in ["", ".", "..", "/"] {
        assert!(
            matches!(
                parse(info(vec![("name", s(bad))], &[])),
                Err(MetainfoError::BadName(_))
            ),
            "{bad:?}"
        );
    }
    // name.utf-8 wins when it is a string, even an empty one.
    let m = parse(info(vec![("name.utf-8", s("u"))], &[])).unwrap();
    assert_eq!(m.name(), b"u");
    let m = parse(info(vec![("name.utf-8", s("u"))], &["name"])).unwrap();
    assert_eq!(m.name(), b"u");
    assert!(parse(info(vec![("name.utf-8", s(""))], &[])).is_err());
    let m = parse(info(vec![("name.utf-8", B::I(5))], &[])).unwrap();
    assert_eq!(m.name(), b"a");
    // Accepted (libtorrent sanitises) but flagged.
    let m = parse(info(vec![("name", s("a/b"))], &[])).unwrap();
    assert_eq!(m.unsafe_paths()[0].problem, PathProblem::Separator);
    assert_eq!(m.unsafe_paths()[0].file, None);
}

fn file<'a>(length: i64, path: Vec<&'a str>) -> B<'a> {
    B::D(vec![
        ("length", B::I(length)),
        ("path", B::L(path.into_iter().map(s).collect())),
    ])
}

fn multi<'a>(name: &'a str, files: Vec<B<'a>>) -> B<'a> {
    B::D(vec![
        ("files", B::L(files)),
        ("name", s(name)),
        ("piece length", B::I(16384)),
        ("pieces", B::S(&H)),
    ])
}

#[test]
fn multi_file() {
    let m = parse(multi(
        "d",
        vec![file(5, vec!["x", "y"]), file(5, vec!["z"])],
    ))
    .unwrap();
    assert!(m.is_multi_file());
    assert_eq!(m.total_length(), 10);
    let f = m.files();
    assert_eq!(f[0].path, vec![b"x".to_vec(), b"y".to_vec()]);
    assert_eq!((f[1].offset, f[1].length), (5, 5));
    assert!(m.unsafe_paths().is_empty());
}

#[test]
fn multi_file_rules() {
    assert_eq!(
        parse(multi("d", vec![])).unwrap_err(),
        MetainfoError::NoFiles
    );
    assert!(matches!(
        parse(multi("d", vec![file(-5, vec!["x"]), file(15, vec!["y"])])),
        Err(MetainfoError::NegativeLength(_, -5))
    ));
    assert!(matches!(
        parse(multi("d", vec![file(10, vec![])])),
        Err(MetainfoError::BadFile { index: 0, .. })
    ));
    assert!(matches!(
        parse(multi("d", vec![B::I(5), file(10, vec!["y"])])),
        Err(MetainfoError::BadFile { index: 0, .. })
    ));
    assert!(matches!(
        parse(multi(
            "d",
            vec![B::D(vec![
                ("length", B::I(10)),
                ("path", B::L(vec![B::I(5)]))
            ])]
        )),
        Err(MetainfoError::BadFile { index: 0, .. })
    ));
    assert!(matches!(
        parse(multi(
            "d",
            vec![B::D(vec![("length", B::I(10)), ("path", s("x"))])]
        )),
        Err(MetainfoError::BadFile { index: 0, .. })
    ));
    assert!(matches!(
        parse(multi(
            "d",
            vec![
                B::D(vec![("path", B::L(vec![s("x")]))]),
                file(10, vec!["y"])
            ]
        )),
        Err(MetainfoError::BadFile { index: 0, .. })
    ));
    assert_eq!(
        parse(multi("d", vec![file(0, vec!["x"])])).unwrap_err(),
        MetainfoError::Empty
    );
    assert!(parse(multi("d", vec![file(0, vec!["x"]), file(10, vec!["y"])])).is_ok());
    let big = 1i64 << 62;
    assert_eq!(
        parse(multi("d", vec![file(big, vec!["x"]), file(big, vec!["y"])])).unwrap_err(),
        MetainfoError::TotalTooLarge
    );
    // A multi-file torrent may have an empty name (libtorrent renames it) — flagged.
    let m = parse(multi("", vec![file(10, vec!["x"])])).unwrap();
    assert_eq!(m.unsafe_paths()[0].problem, PathProblem::Empty);
    // `files` wins over `length`; a `files` that is not a list is ignored.
    let mut d = match multi("d", vec![file(10, vec!["x"])]) {
        B::D(d) => d,
        _ => unreachable!(),
    };
    d.push(("length", B::I(99)));
    assert!(parse(B::D(d)).unwrap().is_multi_file());
    let m = parse(info(vec![("files", B::I(5))], &[])).unwrap();
    assert!(!m.is_multi_file());
}

#[test]
fn path_utf8_and_attributes() {
    let m = parse(multi(
        "d",
        vec![
            B::D(vec![
                ("length", B::I(5)),
                ("path", B::L(vec![s("raw")])),
                ("path.utf-8", B::L(vec![s("u")])),
            ]),
            B::D(vec![
                ("attr", s("p")),
                ("length", B::I(5)),
                ("path", B::L(vec![s(".pad"), s("5")])),
            ]),
            B::D(vec![
                ("attr", s("l")),
                ("length", B::I(0)),
                ("path", B::L(vec![s("link")])),
                ("symlink path", B::L(vec![s(".."), s("etc")])),
            ]),
        ],
    ))
    .unwrap();
    let f = m.files();
    assert_eq!(f[0].path, vec![b"u".to_vec()]);
    assert!(f[1].is_padding() && !f[0].is_padding());
    assert_eq!(f[2].symlink, Some(vec![b"..".to_vec(), b"etc".to_vec()]));
    let u = m.unsafe_paths();
    assert_eq!(u.len(), 1);
    assert!(u[0].in_symlink_target);
    assert_eq!(u[0].problem, PathProblem::ParentDir);
}

#[test]
fn unsafe_paths_are_flagged_not_rejected() {
    let m = parse(multi(
        "d",
        vec![
            file(1, vec!["a/b"]),
            file(1, vec!["", ".", "c"]),
            file(1, vec!["/abs"]),
            file(1, vec!["n\0ul"]),
            file(1, vec![".."]),
            file(1, vec!["C:x"]),
            file(4, vec!["ok", "fine"]),
        ],
    ))
    .unwrap();
    let found = m.unsafe_paths();
    let got: Vec<(Option<usize>, &[u8], PathProblem)> = found
        .iter()
        .map(|u| (u.file, u.component.as_slice(), u.problem))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(0), &b"a/b"[..], PathProblem::Separator),
            (Some(1), &b""[..], PathProblem::Empty),
            (Some(1), &b"."[..], PathProblem::CurrentDir),
            (Some(2), &b"/abs"[..], PathProblem::Absolute),
            (Some(3), &b"n\0ul"[..], PathProblem::Nul),
            (Some(4), &b".."[..], PathProblem::ParentDir),
            (Some(5), &b"C:x"[..], PathProblem::Absolute),
        ]
    );
}

#[test]
fn private_flag() {
    let p = |v| parse(info(vec![("private", v)], &[])).unwrap().is_private();
    assert!(p(B::I(1)));
    assert!(p(B::I(2)));
    assert!(!p(B::I(0)));
    assert!(!p(s("1")));
}

#[test]
fn optional_outer_keys() {
    let t = B::D(vec![
        ("announce", s("http://t/announce")),
        (
            "announce-list",
            B::L(vec![
                B::L(vec![s("http://a"), s("http://b")]),
                B::I(3),
                B::L(vec![]),
                B::L(vec![s("udp://c")]),
            ]),
        ),
        ("comment", s("hi")),
        ("created by", s("me")),
        ("creation date", B::I(1700000000)),
        ("info", info(vec![], &[])),
    ]);
    let m = Metainfo::from_bytes(&t.bytes()).unwrap();
    assert_eq!(m.announce(), Some("http://t/announce"));
    assert_eq!(
        m.announce_list(),
        &[
            vec!["http://a".to_string(), "http://b".to_string()],
            vec!["udp://c".to_string()]
        ]
    );
    assert_eq!(m.comment(), Some("hi"));
    assert_eq!(m.created_by(), Some("me"));
    assert_eq!(m.creation_date(), Some(1700000000));
    // Malformed optional keys are ignored, as libtorrent does.
    let t = B::D(vec![
        ("announce", B::I(5)),
        ("announce-list", B::I(5)),
        ("creation date", s("x")),
        ("info", info(vec![], &[])),
    ]);
    let m = Metainfo::from_bytes(&t.bytes()).unwrap();
    assert_eq!(m.announce(), None);
    assert!(m.announce_list().is_empty());
    assert_eq!(m.creation_date(), None);
}

#[test]
fn with_announce_keeps_the_info_hash() {
    let unsorted_info = B::D(vec![
        ("pieces", B::S(&H)),
        ("name", s("a")),
        ("piece length", B::I(16384)),
        ("length", B::I(10)),
    ]);
    let t = B::D(vec![
        ("zz", B::L(vec![B::I(1)])),
        ("info", unsorted_info),
        ("announce-list", B::L(vec![B::L(vec![s("http://old")])])),
        ("announce", s("http://old")),
        ("comment", s("c")),
    ]);
    let m = Metainfo::from_bytes(&t.bytes()).unwrap();
    let out = m.with_announce(Some("http://new/announce"));
    let m2 = Metainfo::from_bytes(&out).unwrap();
    assert_eq!(m2.info_hash(), m.info_hash());
    assert_eq!(m2.raw_info(), m.raw_info());
    assert_eq!(m2.announce(), Some("http://new/announce"));
    assert!(m2.announce_list().is_empty());
    assert_eq!(m2.comment(), Some("c"));
    let mut expect = b"d8:announce19:http://new/announce7:comment1:c4:info".to_vec();
    expect.extend_from_slice(m.raw_info());
    expect.extend_from_slice(b"2:zzli1eee");
    assert_eq!(out, expect);

    let none = Metainfo::from_bytes(&m.with_announce(None)).unwrap();
    assert_eq!(none.announce(), None);
    assert_eq!(none.info_hash(), m.info_hash());
}

#[test]
fn meta_version_rules() {
    for v in [1, 3] {
        assert_eq!(
            parse(info(vec![("meta version", B::I(v))], &[])).unwrap_err(),
            MetainfoError::UnsupportedMetaVersion(v)
        );
    }
    assert_eq!(
        parse(info(vec![("meta version", B::I(2))], &[])).unwrap_err(),
        MetainfoError::MissingFileTree
    );
    assert_eq!(
        parse(info(
            vec![("meta version", B::I(2)), ("file tree", B::D(vec![]))],
            &["pieces"]
        ))
        .unwrap_err(),
        MetainfoError::V2Only
    );
    assert!(parse(info(vec![("meta version", s("2"))], &[])).is_ok());
}

#[test]
fn libtorrent_made_hybrid_torrent() {
    // Made by libtorrent 2.0.8 create_torrent (hybrid by default): two files with BEP 47
    // padding between them.
    let m = Metainfo::from_bytes(include_bytes!("data/hybrid.torrent")).unwrap();
    assert!(m.is_hybrid());
    assert_eq!(
        m.info_hash_hex(),
        "c0748a9df030d000272194c4cd189479afb2e8d0"
    );
    assert_eq!(m.pieces().len(), 4);
    assert_eq!(m.total_length(), 65536);
    let paths: Vec<String> = m
        .files()
        .iter()
        .map(|f| {
            f.path
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert_eq!(paths, ["a", ".pad/9152", "b", ".pad/11384"]);
    assert_eq!(
        m.files().iter().map(|f| f.is_padding()).collect::<Vec<_>>(),
        [false, true, false, true]
    );
}

#[test]
fn libtorrent_made_v1_torrent() {
    let m = Metainfo::from_bytes(include_bytes!("data/v1.torrent")).unwrap();
    assert!(!m.is_hybrid());
    assert_eq!(
        m.info_hash_hex(),
        "556b6a25f3c5fe1bde9d93dd4eaff090e374bcee"
    );
    assert_eq!((m.pieces().len(), m.total_length()), (3, 40000));
    assert_eq!(m.piece_size(2), Some(40000 - 32768));
}

#[test]
fn owned_value_torrents_parse() {
    let t = OwnedValue::dict()
        .with(
            "info",
            OwnedValue::dict()
                .with("length", 1)
                .with("name", "n")
                .with("piece length", 1)
                .with("pieces", H)
                .build(),
        )
        .build();
    assert!(Metainfo::from_bytes(&t.to_bytes()).is_ok());
}
