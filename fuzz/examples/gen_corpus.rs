//! Writes the seed corpus, `fuzz/corpus/<target>/`, from the project's own encoders and
//! builders (and the metainfo crate's test torrents): `cargo run --example gen_corpus`
//! in `fuzz/` (a plain build; docs/fuzzing.md). Deterministic: running it again rewrites
//! the same files.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use swarmbak_bencode::OwnedValue;
use swarmbak_format::manifest::{ChunkRef, Entry, Kind, Manifest, PackRef};
use swarmbak_format::InfoHash;
use swarmbak_metainfo::{build_swarmbak_torrent, SwarmbakParams, SwarmbakTorrent};
use swarmbak_tracker::{AnnounceEvent, AnnounceRequest, PeerId};
use swarmbak_wire::{
    Answer, BlockRef, Challenge, ExtensionHandshake, Handshake, MachineMessage, Message,
    MetadataMessage, Reserved, SB_MACHINE, UT_METADATA,
};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    fs::write(dir.join(name), bytes).expect("corpus file");
}

fn swarmbak_torrent() -> Vec<u8> {
    let (k, m, stripes, piece_length) = (2u16, 1u16, 2u64, 16 * 1024u64);
    let pieces = (0..stripes * u64::from(k + m))
        .map(|i| [i as u8; 20])
        .collect();
    build_swarmbak_torrent(&SwarmbakTorrent {
        announce: Some("http://tracker.example:6969/announce".into()),
        creation_date: 1_700_000_000,
        name: "swarmbak-0123456789abcdef.shards".into(),
        piece_length,
        piece_hashes: pieces,
        params: SwarmbakParams {
            format: 1,
            k,
            m,
            stripes,
            payload_length: stripes * u64::from(k) * piece_length - 7,
            manifest_offset: 100,
            manifest_length: 50,
            id: *b"0123456789abcdef",
            roots: None,
        },
    })
    .expect("a valid swarmbak torrent")
}

/// A multi-file torrent with BEP 12 tiers, a padding file, a symlink and an unsafe path.
fn multi_file_torrent() -> Vec<u8> {
    let file = |path: &[&str], length: i64, attr: Option<&str>| {
        let mut d = OwnedValue::dict().with("length", length).with(
            "path",
            OwnedValue::list(path.iter().map(|c| OwnedValue::str(c))),
        );
        if let Some(a) = attr {
            d = d.with("attr", a);
        }
        if attr == Some("l") {
            d = d.with(
                "symlink path",
                OwnedValue::list(["..", "etc"].iter().map(|c| OwnedValue::str(c))),
            );
        }
        d.build()
    };
    let info = OwnedValue::dict()
        .with(
            "files",
            OwnedValue::list([
                file(&["dir", "a.txt"], 20_000, None),
                file(&[".pad", "12768"], 12_768, Some("p")),
                file(&["dir", "link"], 0, Some("l")),
                file(&["..", "escape"], 1, Some("x")),
            ]),
        )
        .with("name", "multi")
        .with("piece length", 16 * 1024)
        .with("pieces", vec![0xabu8; 60])
        .build();
    OwnedValue::dict()
        .with("announce", "udp://tracker.example:6969/announce")
        .with(
            "announce-list",
            OwnedValue::list([
                OwnedValue::list([OwnedValue::str("http://a.example/announce")]),
                OwnedValue::list([OwnedValue::str("udp://b.example:80")]),
            ]),
        )
        .with("comment", "seed")
        .with("created by", "gen_corpus")
        .with("creation date", 1_700_000_000)
        .with("info", info)
        .build()
        .to_bytes()
}

fn extension_handshake() -> Vec<u8> {
    let mut h = ExtensionHandshake::default();
    h.extensions.insert(UT_METADATA.into(), 3);
    h.extensions.insert(SB_MACHINE.into(), 7);
    h.client = Some("swarmbak 0.1.0".into());
    h.port = Some(6881);
    h.reqq = Some(500);
    h.metadata_size = Some(31_235);
    h.yourip = Some([127, 0, 0, 1].into());
    h.sb_key = Some(b"age1examplekey".to_vec());
    h.sb_owner = true;
    h.encode()
}

fn bencode() {
    let seeds: &[(&str, &[u8])] = &[
        ("int", b"i-42e"),
        ("string", b"4:spam"),
        ("list", b"l4:spami42ee"),
        ("dict", b"d3:bar4:spam3:fooi42ee"),
        ("unsorted-dup", b"d3:fooi1e3:bari2e3:fooi3ee"),
        ("nested", b"lld1:ali1eeee"),
        ("prefix", b"i1etrailing"),
    ];
    for (name, b) in seeds {
        write("bencode", name, b);
    }
    write("bencode", "extension-handshake", &extension_handshake());
    write("bencode", "swarmbak-torrent", &swarmbak_torrent());
}

fn metainfo() {
    write(
        "metainfo",
        "v1.torrent",
        include_bytes!("../../crates/metainfo/tests/data/v1.torrent"),
    );
    write(
        "metainfo",
        "hybrid.torrent",
        include_bytes!("../../crates/metainfo/tests/data/hybrid.torrent"),
    );
    write("metainfo", "swarmbak.torrent", &swarmbak_torrent());
    write("metainfo", "multi-file.torrent", &multi_file_torrent());
}

fn messages(ms: &[Message]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for m in ms {
        m.encode(&mut b);
    }
    b.to_vec()
}

fn wire() {
    // c0: 4 pieces (0x03), our even pieces (0x10), Fast (0x20), extensions (0x40),
    // handshake first (0x80); c1: 256-byte pieces, a full last piece, reads of 1 byte.
    let hs = Handshake {
        reserved: Reserved::SWARMBAK,
        info_hash: [1; 20],
        peer_id: *b"-SB0100-0123456789ab",
    };
    let ext = |id: u8, payload: Vec<u8>| Message::Extended {
        id,
        payload: Bytes::from(payload),
    };
    let leecher = [
        Message::Extended {
            id: 0,
            payload: Bytes::from(extension_handshake()),
        },
        Message::Bitfield(Bytes::from_static(&[0b0101_0000])),
        Message::Have(0),
        Message::Interested,
        Message::Unchoke,
        Message::Piece {
            piece: 1,
            offset: 0,
            data: Bytes::from(vec![7u8; 256]),
        },
        Message::Request(BlockRef::new(0, 0, 256)),
        Message::Cancel(BlockRef::new(0, 0, 256)),
        Message::KeepAlive,
        Message::Choke,
        Message::Reject(BlockRef::new(3, 0, 256)),
        Message::AllowedFast(3),
        Message::Suggest(1),
        Message::Port(6881),
        ext(3, MetadataMessage::Request { piece: 0 }.encode()),
        ext(
            3,
            MetadataMessage::Data {
                piece: 0,
                total_size: 5,
                data: Bytes::from_static(b"d1:ae"),
            }
            .encode(),
        ),
        ext(3, MetadataMessage::Reject { piece: 0 }.encode()),
        ext(7, b"d4:typei0ee".to_vec()),
        Message::HaveAll,
        Message::NotInterested,
        Message::HaveNone,
        Message::Unknown {
            id: 99,
            payload: Bytes::from_static(b"x"),
        },
    ];
    let mut with_hs = vec![0xf3, 0x00];
    with_hs.extend_from_slice(&hs.to_bytes());
    with_hs.extend_from_slice(&messages(&leecher));
    write("wire", "handshake-session", &with_hs);

    let mut seeder = vec![0x73, 0x08];
    seeder.extend_from_slice(&messages(&[
        Message::HaveAll,
        Message::Unchoke,
        Message::Piece {
            piece: 0,
            offset: 0,
            data: Bytes::from(vec![1u8; 256]),
        },
        Message::KeepAlive,
        Message::KeepAlive,
    ]));
    write("wire", "no-handshake-fast", &seeder);

    let mut plain = vec![0x01, 0x00];
    plain.extend_from_slice(&messages(&[
        Message::Bitfield(Bytes::from_static(&[0b1100_0000])),
        Message::Interested,
        Message::Unchoke,
        Message::Request(BlockRef::new(1, 0, 256)),
        Message::Choke,
    ]));
    write("wire", "no-fast-no-extensions", &plain);

    let mut eh = vec![0x00, 0x00];
    eh.extend_from_slice(&extension_handshake());
    write("wire", "extension-handshake-payload", &eh);
    let mut md = vec![0x00, 0x00];
    md.extend_from_slice(
        &MetadataMessage::Data {
            piece: 0,
            total_size: 5,
            data: Bytes::from_static(b"d1:ae"),
        }
        .encode(),
    );
    write("wire", "metadata-payload", &md);
    // A tagged sb_machine message: wire.md's `refuse` example and its tag (trust.md
    // §11.5), then a challenge with its nonce and a response with a block and a path.
    let mut tagged = vec![0x00, 0x00];
    tagged.extend_from_slice(b"d2:idi7e5:retryi60e1:ti9e3:whyi2ee");
    tagged.extend_from_slice(&[
        0x9c, 0xb4, 0x04, 0x6d, 0x5b, 0x12, 0x03, 0xf4, 0x9b, 0xda, 0x15, 0xa3, 0xd6, 0x8a, 0x88,
        0x0f,
    ]);
    write("wire", "machine-refuse-tagged", &tagged);
    let tagged_payload = |name: &str, m: MachineMessage| {
        let mut b = vec![0x00, 0x00];
        b.extend_from_slice(&m.encode_tagged(|_| [0xee; 16]));
        write("wire", name, &b);
    };
    tagged_payload(
        "machine-challenge-tagged",
        MachineMessage::Challenge {
            id: 8,
            nonce: Some([0xc0; 32]),
            entries: Challenge::Digest(vec![(5, 2, 2)]),
        },
    );
    tagged_payload(
        "machine-response-tagged",
        MachineMessage::Response {
            id: 7,
            index: 1,
            answers: vec![Answer::Block {
                data: b"DATA".to_vec(),
                path: vec![[0xaa; 32], [0xbb; 32]],
            }],
        },
    );
}

fn announce_request() -> AnnounceRequest {
    let mut r = AnnounceRequest::new(
        InfoHash([0xab; 20]),
        PeerId(*b"-SB0100-0123456789ab"),
        6881,
        1000,
    );
    r.uploaded = 5;
    r.downloaded = 7;
    r.event = Some(AnnounceEvent::Started);
    r.numwant = Some(50);
    r.key = Some(0xdead_beef);
    r.ip = Some("10.0.0.1".into());
    r.tracker_id = Some(b"tid".to_vec());
    r.machine = Some("age1machinekey".into());
    r.quota = Some(50_000_000_000);
    r.no_peer_id = true;
    r
}

fn tracker_query() {
    let q = announce_request().to_query();
    let scrape = "info_hash=%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB&info_hash=aaaaaaaaaaaaaaaaaaaa";
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("query-announce", [b"\x01", q.as_bytes()].concat()),
        (
            "query-minimal",
            b"\x01info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1".to_vec(),
        ),
        ("query-scrape", [b"\x01", scrape.as_bytes()].concat()),
    ];
    let heads = [
        ("http-announce", format!("GET /announce?{q} HTTP/1.1\r\nHost: t\r\n\r\n")),
        (
            "http-passkey-announce",
            format!("GET /0123456789abcdef0123456789abcdef/announce?{q} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        ),
        (
            "http-scrape",
            format!("GET /scrape/0123456789abcdef0123456789abcdef?{scrape} HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ),
        (
            "http-hyper",
            "POST /publish HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_string(),
        ),
    ];
    for (name, h) in heads {
        seeds.push((name, [b"\x00", h.as_bytes()].concat()));
    }
    // UDP: connect, announce with BEP 41 URL data, scrape of two info-hashes.
    let mut connect = vec![2u8];
    connect.extend_from_slice(&0x0417_2710_1980u64.to_be_bytes());
    connect.extend_from_slice(&0u32.to_be_bytes());
    connect.extend_from_slice(&7u32.to_be_bytes());
    seeds.push(("udp-connect", connect));
    let mut announce = vec![2u8];
    announce.extend_from_slice(&42u64.to_be_bytes());
    announce.extend_from_slice(&1u32.to_be_bytes());
    announce.extend_from_slice(&7u32.to_be_bytes());
    announce.extend_from_slice(&[0xab; 20]);
    announce.extend_from_slice(b"-SB0100-0123456789ab");
    for v in [7u64, 1000, 5] {
        announce.extend_from_slice(&v.to_be_bytes());
    }
    for v in [2u32, 0, 0xdead_beef, u32::MAX] {
        announce.extend_from_slice(&v.to_be_bytes());
    }
    announce.extend_from_slice(&6881u16.to_be_bytes());
    let path = b"/0123456789abcdef0123456789abcdef/announce?x=1";
    announce.extend_from_slice(&[1, 2, path.len() as u8]);
    announce.extend_from_slice(path);
    announce.push(0);
    seeds.push(("udp-announce", announce));
    let mut scrape_p = vec![2u8];
    scrape_p.extend_from_slice(&42u64.to_be_bytes());
    scrape_p.extend_from_slice(&2u32.to_be_bytes());
    scrape_p.extend_from_slice(&7u32.to_be_bytes());
    scrape_p.extend_from_slice(&[0xab; 20]);
    scrape_p.extend_from_slice(&[0xcd; 20]);
    scrape_p.extend_from_slice(&[2, 9]);
    scrape_p.extend_from_slice(b"/announce");
    seeds.push(("udp-scrape", scrape_p));
    for (name, b) in seeds {
        write("tracker_query", name, &b);
    }
}

fn entry(path: &str, kind: Kind) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        mode: 0o644,
        mtime: 1_700_000_000,
        mtime_ns: 5,
        size: 0,
        chunks: Vec::new(),
        target: Vec::new(),
        ino: 9,
        ctime: 1_700_000_001,
        ctime_ns: 6,
    }
}

fn manifest() {
    let chunk = |i: u8, pack: u32, codec: u8| ChunkRef {
        id: [i; 32],
        pack,
        offset: 8 + u64::from(i) * 10,
        stored_len: 10,
        raw_len: if codec == 0 { 10 } else { 100 },
        codec,
    };
    let mut file = entry("home/notes.txt", Kind::File);
    file.chunks = vec![0, 1];
    file.size = 110;
    let mut link = entry("home/link", Kind::Symlink);
    link.target = b"notes.txt".to_vec();
    let m = Manifest {
        format: swarmbak_format::MANIFEST_FORMAT,
        time: 1_700_000_000,
        time_ns: 1,
        machine_name: "laptop-7".into(),
        machine_key: "age1machinekey".into(),
        source_paths: vec![b"/home".to_vec()],
        parents: vec![InfoHash([3; 20])],
        snapshots: vec![InfoHash([4; 20])],
        chunk_key: [5; 32],
        packs: vec![
            PackRef {
                snapshot: 0,
                offset: 0,
                len: 999,
            },
            PackRef {
                snapshot: 1,
                offset: 1000,
                len: 999,
            },
        ],
        chunks: vec![chunk(0, 0, 0), chunk(1, 1, 1)],
        entries: vec![
            entry("home", Kind::Dir),
            file,
            link,
            entry("home/empty", Kind::Dir),
        ],
    };
    m.validate().expect("a valid manifest");
    write("manifest", "small", &m.encode());
}

fn restore_paths() {
    let seeds: &[(&str, &[u8])] = &[
        (
            "tree",
            b"dhome\nfhome/a\ndhome/sub\nlhome/link\nfhome/sub/b\n?home/sub",
        ),
        ("escape", b"d..\nf../x\nf/etc/passwd\ndhome\nfhome/./a"),
        ("through-symlink", b"lhome\nfhome/x\n?home"),
        ("one-path", b"a/b/c"),
    ];
    for (name, b) in seeds {
        write("restore_paths", name, b);
    }
}

fn main() {
    bencode();
    metainfo();
    wire();
    tracker_query();
    manifest();
    restore_paths();
}
