#!/usr/bin/python3
"""Seed a torrent with libtorrent on 127.0.0.1 until killed.

  lt_seed.py TORRENT SAVE_DIR            prints "port N" once listening, "seeding" once checked
  lt_seed.py --make OUT.torrent SRC PIECE_SIZE [--hybrid] [--announce URL]
                                         makes a v1 (or hybrid v1+v2) torrent
"""
import sys, time, os
import libtorrent as lt

def settings():
    return {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.all_categories,
    }

def make(out, src, piece_size, hybrid, announce=None):
    fs = lt.file_storage()
    lt.add_files(fs, src)
    # v1 only, or hybrid v1+v2 (which aligns files to pieces with BEP 47 padding files).
    flags = 0 if hybrid else lt.create_torrent.v1_only
    t = lt.create_torrent(fs, piece_size, flags=flags)
    if announce:
        t.add_tracker(announce)
    lt.set_piece_hashes(t, os.path.dirname(os.path.abspath(src)))
    e = t.generate()
    with open(out, "wb") as f:
        f.write(lt.bencode(e))

def seed(torrent, save):
    s = lt.session(settings())
    ti = lt.torrent_info(torrent)
    h = s.add_torrent({"ti": ti, "save_path": save})
    port = s.listen_port()
    print("port", port, flush=True)
    t0 = time.time()
    while not h.status().is_seeding:
        if time.time() - t0 > 60:
            print("error: not seeding after 60 s:", h.status().state, flush=True)
            sys.exit(1)
        time.sleep(0.05)
    print("seeding", flush=True)
    while True:  # until killed
        time.sleep(3600)

if __name__ == "__main__":
    if sys.argv[1] == "--make":
        announce = sys.argv[sys.argv.index("--announce") + 1] if "--announce" in sys.argv else None
        make(sys.argv[2], sys.argv[3], int(sys.argv[4]), "--hybrid" in sys.argv, announce)
    else:
        seed(sys.argv[1], sys.argv[2])
