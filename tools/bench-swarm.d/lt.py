#!/usr/bin/python3
"""libtorrent side of tools/bench-swarm (run with /usr/bin/python3, which has python3-libtorrent).

  lt.py make FILE TORRENT [--piece BYTES]     single-file torrent of FILE (SHA-1 v1 hashes)
  lt.py seed TORRENT SAVE_DIR                 seed; prints "ready PORT" once it is a seed, runs
                                              until SIGTERM/SIGINT, then prints one JSON line
  lt.py leech TORRENT SAVE_DIR --seed PORT [--peers-dir DIR] [--timeout S]
        download from the seeder on 127.0.0.1:PORT (and from the other leechers whose listen
        ports appear as files in --peers-dir); prints one JSON line when it is a seed and exits.

Every session: listen on 127.0.0.1 only, TCP only (uTP off), no DHT, LSD, UPnP or NAT-PMP,
several connections per IP allowed (all peers are on 127.0.0.1). Otherwise libtorrent's defaults.
"""
import json
import os
import signal
import sys
import time

import libtorrent as lt


def session():
    s = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "alert_mask": 0,
    })
    for _ in range(100):
        if s.listen_port():
            break
        time.sleep(0.01)
    return s


def add(s, torrent, save):
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(torrent)
    p.save_path = save
    return s.add_torrent(p)


def make(args):
    path, out = os.path.abspath(args[0]), args[1]
    piece = int(args[args.index("--piece") + 1]) if "--piece" in args else 1 << 20
    fs = lt.file_storage()
    lt.add_files(fs, path)
    ct = lt.create_torrent(fs, piece)
    lt.set_piece_hashes(ct, os.path.dirname(path))
    with open(out, "wb") as f:
        f.write(lt.bencode(ct.generate()))


def seed(args):
    s = session()
    h = add(s, args[0], args[1])
    t0 = time.monotonic()
    while not h.status().is_seeding:
        if time.monotonic() - t0 > 600:
            sys.exit("lt.py seed: the data did not check as complete")
        time.sleep(0.02)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("ready %d" % s.listen_port(), flush=True)
    while not stop:
        time.sleep(0.05)
    st = h.status()
    print(json.dumps({"role": "seed", "payload_upload": st.total_payload_upload,
                      "total_upload": st.total_upload}), flush=True)


def leech(args):
    torrent, save = args[0], args[1]
    port = int(args[args.index("--seed") + 1])
    peers_dir = args[args.index("--peers-dir") + 1] if "--peers-dir" in args else None
    timeout = float(args[args.index("--timeout") + 1]) if "--timeout" in args else 300.0
    start = time.monotonic()
    s = session()
    mine = s.listen_port()
    if peers_dir:
        with open(os.path.join(peers_dir, "%d.port.tmp" % os.getpid()), "w") as f:
            f.write(str(mine))
        os.rename(os.path.join(peers_dir, "%d.port.tmp" % os.getpid()),
                  os.path.join(peers_dir, "%d.port" % os.getpid()))
    t_add = time.monotonic()
    h = add(s, torrent, save)
    h.connect_peer(("127.0.0.1", port))
    known = {port, mine}
    while True:
        st = h.status()
        if st.is_seeding:
            break
        if time.monotonic() - start > timeout:
            sys.exit("lt.py leech: timed out at %.1f%%" % (st.progress * 100))
        if peers_dir:
            for n in os.listdir(peers_dir):
                if n.endswith(".port"):
                    try:
                        p = int(open(os.path.join(peers_dir, n)).read())
                    except (OSError, ValueError):
                        continue
                    if p not in known:
                        known.add(p)
                        h.connect_peer(("127.0.0.1", p))
        time.sleep(0.01)
    done = time.monotonic()
    st = h.status()
    print(json.dumps({"role": "leech", "seconds": done - t_add,
                      "seconds_since_start": done - start,
                      "payload_download": st.total_payload_download,
                      "total_download": st.total_download,
                      "payload_upload": st.total_payload_upload,
                      "peers_seen": len(known) - 1}), flush=True)


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    {"make": make, "seed": seed, "leech": leech}[cmd](rest)
