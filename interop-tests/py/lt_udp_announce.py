#!/usr/bin/python3
"""libtorrent announces a torrent to one UDP tracker URL, for udp_tracker.rs.

Usage: lt_udp_announce.py TORRENT SAVE_DIR TRACKER_URL SECONDS [REANNOUNCE_SECONDS]

Adds TORRENT paused, replaces its trackers by TRACKER_URL only (so nothing goes to the
HTTP announce URL the torrent carries), resumes it and reports what the tracker answers
for SECONDS, then removes the torrent (a `stopped` announce) and exits 0. SAVE_DIR holds
nothing: libtorrent announces as a leecher. With REANNOUNCE_SECONDS it forces a
re-announce that often (libtorrent waits at least 60 s between UDP announces otherwise).
Prints JSON lines:
  {"event": "added", "listen_port": P, "libtorrent": "2.0.8.0"}
  {"event": "reply", "num_peers": N, "url": ...}           tracker_reply_alert
  {"event": "error", "message": ..., "failure_reason": ..., "error": ...}
  {"event": "peer", "ip": "127.0.0.1", "port": P}          peers libtorrent learnt
  {"event": "announce", "announce_event": E, "url": ...}    tracker_announce_alert
  {"event": "state", "state": ...}                          state_changed_alert
Session on loopback: TCP only (uTP off), no DHT, LSD, UPnP or NAT-PMP.
"""

import json
import sys
import time

import libtorrent as lt


def out(obj):
    print(json.dumps(obj), flush=True)


def main():
    torrent, save, url, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    every = float(sys.argv[5]) if len(sys.argv) > 5 else 0
    s = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "announce_to_all_trackers": True,
        "ssrf_mitigation": False,
        # Its floor is 5 minutes: re-announce at the tracker's interval instead.
        "min_announce_interval": 1,
        "alert_mask": lt.alert.category_t.all_categories,
    })
    with open(torrent, "rb") as f:
        ti = lt.torrent_info(f.read())
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = save
    atp.flags = (atp.flags | lt.torrent_flags.paused) & ~lt.torrent_flags.auto_managed
    h = s.add_torrent(atp)
    h.replace_trackers([lt.announce_entry(url)])
    trackers = [t["url"] if isinstance(t, dict) else t.url for t in h.trackers()]
    out({"event": "added", "listen_port": s.listen_port(), "libtorrent": lt.__version__,
         "trackers": trackers})
    h.resume()
    seen = set()
    deadline = time.time() + seconds
    last = time.time()
    while time.time() < deadline:
        s.wait_for_alert(200)
        if every and time.time() - last >= every:
            last = time.time()
            h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
        for a in s.pop_alerts():
            if isinstance(a, lt.tracker_reply_alert):
                out({"event": "reply", "num_peers": a.num_peers, "url": a.tracker_url()})
            elif isinstance(a, lt.tracker_error_alert):
                out({"event": "error", "message": a.message(),
                     "failure_reason": a.failure_reason(), "error": a.error.message(),
                     "url": a.tracker_url()})
            elif isinstance(a, lt.tracker_announce_alert):
                out({"event": "announce", "announce_event": int(a.event), "url": a.tracker_url()})
            elif isinstance(a, lt.state_changed_alert):
                out({"event": "state", "state": str(a.state)})
            elif isinstance(a, (lt.tracker_warning_alert, lt.torrent_error_alert)):
                out({"event": "note", "message": a.message()})
            elif isinstance(a, lt.peer_connect_alert) or isinstance(a, lt.peer_disconnected_alert):
                try:
                    ip, port = a.endpoint[0], a.endpoint[1]
                except Exception:
                    continue
                if (ip, port) not in seen:
                    seen.add((ip, port))
                    out({"event": "peer", "ip": ip, "port": port})
    s.remove_torrent(h)
    end = time.time() + 2
    while time.time() < end:
        s.wait_for_alert(200)
        for a in s.pop_alerts():
            if isinstance(a, lt.torrent_removed_alert):
                end = min(end, time.time() + 0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
