#!/usr/bin/python3
"""libtorrent announces to and scrapes a tracker, for clients_vs_tracker.rs.

Usage: lt_tracker_probe.py TORRENT SAVE_DIR TIMEOUT_SECONDS

Adds TORRENT (SAVE_DIR holds nothing, so libtorrent announces as a leecher with
left = total), waits for the first tracker reply or tracker error, and on a reply asks
for a scrape. Prints JSON lines:
  {"event": "version", "libtorrent": "2.0.8.0"}
  {"event": "reply", "num_peers": N}                       tracker_reply_alert
  {"event": "scrape", "complete": C, "incomplete": I}      scrape_reply_alert
  {"event": "scrape_failed", "message": ...}
  {"event": "error", "message": ..., "failure_reason": ..., "error": ..., "times_in_row": N}
  {"event": "timeout"}
then removes the torrent (a `stopped` announce) and exits: 0 after a scrape or a tracker
error, 1 on timeout.

Session on loopback: TCP only (uTP off), no DHT, LSD, UPnP or NAT-PMP, listening on
127.0.0.1 only.
"""

import json
import sys
import time

import libtorrent as lt


def out(obj):
    print(json.dumps(obj), flush=True)


def main():
    torrent, save, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    out({"event": "version", "libtorrent": lt.__version__})
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
        # With SSRF mitigation on (the default), libtorrent refuses any tracker request
        # to a loopback address whose path is not /announce: the scrape fails with
        # "blocked by SSRF mitigation".
        "ssrf_mitigation": False,
        "alert_mask": lt.alert.category_t.all_categories,
    })
    with open(torrent, "rb") as f:
        ti = lt.torrent_info(f.read())
    h = s.add_torrent({"ti": ti, "save_path": save})
    deadline = time.time() + timeout
    scraped = False
    code = 1
    done = False
    while not done and time.time() < deadline:
        s.wait_for_alert(200)
        for a in s.pop_alerts():
            if isinstance(a, lt.tracker_reply_alert):
                out({"event": "reply", "num_peers": a.num_peers, "url": a.tracker_url()})
                if not scraped:
                    scraped = True
                    h.scrape_tracker()
            elif isinstance(a, lt.scrape_reply_alert):
                out({"event": "scrape", "complete": a.complete, "incomplete": a.incomplete})
                code, done = 0, True
            elif isinstance(a, lt.scrape_failed_alert):
                out({"event": "scrape_failed", "message": a.message(), "error": a.error.message(), "error_message": a.error_message()})
                done = True
            elif isinstance(a, lt.tracker_error_alert):
                out({
                    "event": "error",
                    "message": a.message(),
                    "failure_reason": a.failure_reason(),
                    "error": a.error.message(),
                    "times_in_row": a.times_in_row,
                })
                code, done = 0, True
            elif isinstance(a, (lt.tracker_warning_alert, lt.torrent_error_alert)):
                out({"event": "note", "message": a.message()})
    if not done:
        out({"event": "timeout"})
    s.remove_torrent(h)
    # Give the `stopped` announce a moment to leave.
    end = time.time() + 2
    while time.time() < end:
        s.wait_for_alert(200)
        for a in s.pop_alerts():
            if isinstance(a, lt.torrent_removed_alert):
                end = min(end, time.time() + 0.5)
    sys.exit(code)


if __name__ == "__main__":
    main()
