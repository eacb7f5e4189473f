#!/usr/bin/python3
"""libtorrent (python bindings) as a standard BitTorrent client for swarmbak's interop tests.

Run with /usr/bin/python3 (Debian's python3-libtorrent). Every mode stays on 127.0.0.1:
TCP only (uTP off), no DHT, LSD, UPnP or NAT-PMP, encryption off (swarmbak speaks plain
BitTorrent), several connections per IP allowed (every test peer is on 127.0.0.1).

Modes (each prints JSON lines on stdout; the last line of a finished mode is its result):
  version
  download TORRENT SAVE_DIR TIMEOUT   download, then report pieces and what peers negotiated
  seed TORRENT SAVE_DIR               check SAVE_DIR against TORRENT, print {"event":"seeding"}
                                      once every piece checks, then seed until killed
  magnet URI SAVE_DIR TIMEOUT         fetch metadata (BEP 9) from a magnet link; report it
  make_seed SRC_DIR OUT.torrent TRACKER_URL
                                      make a NOT private torrent of SRC_DIR (parent of
                                      SRC_DIR as save path), print its infohash and magnet,
                                      then seed until killed
  verify TORRENT FILE                 SHA-1 of every piece of FILE against TORRENT
"""

import hashlib
import json
import os
import sys
import time

import libtorrent as lt


def out(obj):
    print(json.dumps(obj), flush=True)


def session():
    s = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "out_enc_policy": int(lt.enc_policy.disabled),
        "in_enc_policy": int(lt.enc_policy.enabled),
        "announce_to_all_trackers": True,
        # The swarmbak tracker is private: a client announces to its passkey URL,
        # http://127.0.0.1:PORT/<passkey>/announce. libtorrent's SSRF mitigation (on by
        # default) refuses any tracker request to a loopback address whose path does not
        # start with /announce ("blocked by SSRF mitigation"); on a real network the
        # tracker is not on loopback and the mitigation does not apply.
        "ssrf_mitigation": False,
        "alert_mask": int(lt.alert.category_t.error_notification
                          | lt.alert.category_t.status_notification
                          | lt.alert.category_t.peer_notification
                          | lt.alert.category_t.peer_log_notification
                          | lt.alert.category_t.tracker_notification),
        "peer_connect_timeout": 3,
        "min_reconnect_time": 1,
        "tracker_completion_timeout": 5,
        "tracker_receive_timeout": 5,
        "alert_queue_size": 100000,
    })
    return s


class PeerLog:
    """Keeps, per peer endpoint, libtorrent's own log lines about the handshake: the
    reserved bits it parsed from the peer ("<64 bits> ext: FAST extension ...") and the
    extension handshakes (bencoded dicts, printed as "{ 'm': ... }")."""

    def __init__(self):
        self.peers = {}

    def add(self, a):
        if not isinstance(a, lt.peer_log_alert):
            return
        try:
            ep = "%s:%d" % (a.endpoint[0], a.endpoint[1])
        except Exception:
            ep = "?"
        msg = a.log_message()
        d = self.peers.setdefault(ep, [])
        if len(d) < 20 and (" ext: " in msg or msg.startswith("{ ")):
            d.append(msg[:400])

    def report(self):
        return self.peers


def peer_report(h):
    peers = []
    for p in h.get_peer_info():
        flags = p.flags
        peers.append({
            "ip": "%s:%d" % (p.ip[0], p.ip[1]),
            "client": p.client.decode("utf-8", "replace") if isinstance(p.client, bytes) else p.client,
            "supports_extensions": bool(flags & lt.peer_info.supports_extensions),
            "seed": bool(flags & lt.peer_info.seed),
            "rc4_encrypted": bool(flags & lt.peer_info.rc4_encrypted),
            "local_connection": bool(flags & lt.peer_info.local_connection),
            "total_download": p.total_download,
            "total_upload": p.total_upload,
        })
    return peers


def pump(s, log, verbose_errors=True):
    for a in s.pop_alerts():
        log.add(a)
        if verbose_errors and (a.category() & lt.alert.category_t.error_notification):
            out({"event": "alert", "type": type(a).__name__, "message": a.message()})
        if isinstance(a, (lt.tracker_error_alert, lt.tracker_reply_alert)):
            out({"event": "tracker", "type": type(a).__name__, "message": a.message()})


def add(s, torrent, save):
    ti = lt.torrent_info(torrent)  # from the path: the infohash of the bytes as written
    return ti, s.add_torrent({"ti": ti, "save_path": save})


def all_pieces(h):
    st = h.status()
    return st.num_pieces, len(st.pieces), st


def download(torrent, save, timeout):
    s = session()
    log = PeerLog()
    ti, h = add(s, torrent, save)
    out({"event": "added", "infohash": str(ti.info_hash()), "pieces": ti.num_pieces(),
         "private": ti.priv(), "listen_port": s.listen_port()})
    deadline = time.time() + timeout
    peers_seen = {}
    while time.time() < deadline:
        pump(s, log)
        for p in peer_report(h):
            peers_seen[p["ip"]] = p
        st = h.status()
        if st.is_seeding and st.num_pieces == ti.num_pieces():
            break
        time.sleep(0.05)
    pump(s, log)
    st = h.status()
    have = [bool(x) for x in st.pieces]
    result = {
        "event": "result",
        "complete": bool(st.is_seeding) and all(have) and len(have) == ti.num_pieces(),
        "num_pieces": st.num_pieces,
        "pieces": ti.num_pieces(),
        "total_payload_download": st.total_payload_download,
        "peers": list(peers_seen.values()),
        "peer_log": log.report(),
        "state": str(st.state),
    }
    out(result)
    s.remove_torrent(h)
    return 0 if result["complete"] else 1


def seed(torrent, save):
    s = session()
    log = PeerLog()
    ti, h = add(s, torrent, save)
    out({"event": "added", "infohash": str(ti.info_hash()), "listen_port": s.listen_port()})
    announced = False
    last = 0
    while True:
        pump(s, log)
        st = h.status()
        if not announced and st.is_seeding and st.num_pieces == ti.num_pieces():
            h.force_reannounce()
            out({"event": "seeding", "pieces": st.num_pieces})
            announced = True
        if time.time() - last > 1.0:
            last = time.time()
            out({"event": "status", "state": str(st.state), "num_pieces": st.num_pieces,
                 "upload": st.total_payload_upload, "peers": peer_report(h),
                 "peer_log": log.report()})
        time.sleep(0.2)


def magnet(uri, save, timeout):
    s = session()
    log = PeerLog()
    p = lt.parse_magnet_uri(uri)
    p.save_path = save
    p.flags |= lt.torrent_flags.upload_mode  # metadata only: download no payload
    h = s.add_torrent(p)
    deadline = time.time() + timeout
    got = None
    peers_seen = {}
    while time.time() < deadline and got is None:
        for a in s.pop_alerts():
            log.add(a)
            if isinstance(a, lt.metadata_received_alert):
                got = a
            elif a.category() & lt.alert.category_t.error_notification:
                out({"event": "alert", "type": type(a).__name__, "message": a.message()})
        for pi in peer_report(h):
            peers_seen[pi["ip"]] = pi
        time.sleep(0.1)
    res = {"event": "result", "metadata_received": got is not None,
           "peers": list(peers_seen.values()), "peer_log": log.report()}
    if got is not None:
        ti = h.torrent_file()
        res.update({"infohash": str(ti.info_hash()), "name": ti.name(), "private": ti.priv(),
                    "pieces": ti.num_pieces(), "piece_length": ti.piece_length(),
                    "total_size": ti.total_size()})
    out(res)
    return 0 if got is not None else 1


def make_seed(src, out_torrent, tracker):
    fs = lt.file_storage()
    lt.add_files(fs, src)
    ct = lt.create_torrent(fs, 16384, flags=lt.create_torrent.v1_only)
    ct.add_tracker(tracker)
    ct.set_priv(False)
    parent = os.path.dirname(os.path.abspath(src))
    lt.set_piece_hashes(ct, parent)
    data = lt.bencode(ct.generate())
    with open(out_torrent, "wb") as f:
        f.write(data)
    s = session()
    log = PeerLog()
    ti = lt.torrent_info(out_torrent)
    h = s.add_torrent({"ti": ti, "save_path": parent})
    ih = str(ti.info_hash())
    announced = False
    last = 0
    while True:
        pump(s, log)
        st = h.status()
        if not announced and st.is_seeding:
            h.force_reannounce()
            out({"event": "seeding", "infohash": ih, "listen_port": s.listen_port(),
                 "magnet": lt.make_magnet_uri(ti)})
            announced = True
        if time.time() - last > 1.0:
            last = time.time()
            h.force_reannounce()  # the test whitelists the torrent only once it is known
            out({"event": "status", "state": str(st.state), "upload": st.total_payload_upload,
                 "peers": peer_report(h), "peer_log": log.report()})
        time.sleep(0.2)


def verify(torrent, path):
    ti = lt.torrent_info(torrent)
    n = ti.num_pieces()
    bad = []
    with open(path, "rb") as f:
        for i in range(n):
            data = f.read(ti.piece_size(i))
            if hashlib.sha1(data).digest() != ti.hash_for_piece(i):
                bad.append(i)
        extra = f.read(1)
    res = {"event": "result", "pieces": n, "bad": bad, "size_ok": not extra,
           "ok": not bad and not extra and os.path.getsize(path) == ti.total_size()}
    out(res)
    return 0 if res["ok"] else 1


def main(argv):
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "version":
        out({"libtorrent": lt.__version__})
        return 0
    if mode == "download":
        return download(argv[2], argv[3], float(argv[4]))
    if mode == "seed":
        return seed(argv[2], argv[3])
    if mode == "magnet":
        return magnet(argv[2], argv[3], float(argv[4]))
    if mode == "make_seed":
        return make_seed(argv[2], argv[3], argv[4])
    if mode == "verify":
        return verify(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
