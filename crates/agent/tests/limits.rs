//! What a hostile peer can make an engine hold (wire.md "Limits"): a bounded number of
//! connections per address and in total, and no message larger than the limits buffered.

mod common;

use std::time::Duration;

use swarmbak_agent::engine::MAX_CONNECTIONS_PER_IP;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Closed by the engine within `wait` (EOF or reset)?
async fn closed(s: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 256];
    loop {
        match tokio::time::timeout(wait, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = common::seeding_engine(dir.path(), 3).await;
    // Idle connections that never send a handshake, as an attacker holding sockets would.
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_IP + 16 {
        held.push(
            tokio::net::TcpStream::connect(engine.local_addr())
                .await
                .unwrap(),
        );
    }
    // The refused ones are closed at once; the others wait for a handshake (10 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut refused = 0;
    for s in held.iter_mut() {
        if closed(s, Duration::from_millis(20)).await {
            refused += 1;
        }
    }
    assert!(
        (16..=20).contains(&refused),
        "{refused} of {} connections closed at once (cap {MAX_CONNECTIONS_PER_IP})",
        held.len()
    );
    // Once they go, the address gets its slots back.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = tokio::net::TcpStream::connect(engine.local_addr())
        .await
        .unwrap();
    assert!(!closed(&mut s, Duration::from_millis(300)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limits_closes_the_connection_before_it_is_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, ih) = common::seeding_engine(dir.path(), 3).await;
    let mut s = tokio::net::TcpStream::connect(engine.local_addr())
        .await
        .unwrap();
    let mut hs = swarmbak_wire::Handshake::new(ih.0, *b"-XXTEST-000000000001");
    hs.reserved = swarmbak_wire::Reserved::default().with_extension_protocol(true);
    s.write_all(&hs.to_bytes()).await.unwrap();
    // An extended message announced as 1 MiB: refused from its length prefix.
    let mut m = ((1u32 << 20) + 2).to_be_bytes().to_vec();
    m.extend([20u8, 1]);
    m.extend(vec![0u8; 1000]);
    s.write_all(&m).await.unwrap();
    assert!(closed(&mut s, Duration::from_secs(5)).await);
}

/// Issue 11's `have` flood: 2,000 `have`s (17 KiB) on a 49,152-piece snapshot cost an
/// agent 34.6 s of CPU, because each one recomputed the wanted pieces under the torrent
/// lock. Now what a peer has marks them stale and the connection's timer recomputes them
/// at most once per tick: the flood costs a handful of recomputations, not one per
/// message. (`examples/attack_haves.rs` measures the CPU time on the full-size snapshot.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_haves_recomputes_wanted_pieces_a_bounded_number_of_times() {
    use swarmbak_agent::{Engine, EngineConfig, Role, Torrent};
    use swarmbak_wire::{Handshake, Message};

    let dir = tempfile::tempdir().unwrap();
    let (home, _) = swarmbak_format::Home::create(&dir.path().join("home")).unwrap();
    let (ih, pieces) = common::crafted::crafted_snapshot(&home.store(), 12_000);
    let me = swarmbak_core::MachineKey::from_age_recipient(&home.recipient().unwrap().to_string())
        .unwrap();
    let engine = Engine::start(EngineConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Some(me.clone()),
    ))
    .await
    .unwrap();
    let t = Torrent::open(
        &home.store(),
        ih,
        Role::Replicate { copies: 2 },
        None,
        Some(me),
    )
    .unwrap();
    engine.add(t.clone());
    let mut s = tokio::net::TcpStream::connect(engine.local_addr())
        .await
        .unwrap();
    let mut hs = Handshake::new(ih.0, [b'A'; 20]);
    hs.reserved = swarmbak_agent::peer::reserved();
    s.write_all(&hs.to_bytes()).await.unwrap();
    let mut theirs = [0u8; 68];
    s.read_exact(&mut theirs).await.unwrap();
    let haves = 2_000u32.min(pieces as u32);
    let before = t.wanted_updates();
    let flood: Vec<u8> = (0..haves)
        .flat_map(|p| Message::Have(p).to_bytes())
        .collect();
    s.write_all(&flood).await.unwrap();
    // Until the engine's view of the peer holds every `have`.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = t
            .inner()
            .peers
            .values()
            .map(|p| p.has.count())
            .max()
            .unwrap_or(0);
        if n >= haves {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the engine took {n} of {haves} haves in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A second of the connection's timers (four ticks) after the flood.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let updates = t.wanted_updates() - before;
    eprintln!("{haves} haves on {pieces} pieces: wanted pieces recomputed {updates} times");
    assert!(
        updates <= 20,
        "{haves} haves recomputed wanted pieces {updates} times"
    );
}
