#!/usr/bin/python3
"""Makes N small swarmbak torrents and publishes them to a swarmbak tracker.

  torrents.py N HASHES_OUT [TRACKER_URL]

Each torrent is a valid swarmbak torrent (private, one stripe of k=2 data and m=1 parity
shards of 16 KiB: what crates/tracker/tests/tracker.rs publishes), made here without
swarmbak. Writes the info-hashes (hex, one a line, in order) to HASHES_OUT and, with
TRACKER_URL, POSTs each to TRACKER_URL/publish over a few keep-alive connections.
"""
import hashlib
import http.client
import sys
import threading
import urllib.parse


def benc(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(benc(k) + benc(x) for k, x in items) + b"e"
    raise TypeError(v)


def torrent(i):
    tag = i.to_bytes(8, "big")
    info = {
        "length": 3 * 16384,
        "name": "bench-%d.shards" % i,
        "piece length": 16384,
        "pieces": b"".join(hashlib.sha1(tag + bytes([p])).digest() for p in range(3)),
        "private": 1,
        "swarmbak": {"format": 1, "k": 2, "m": 1, "stripes": 1, "payload length": 1000,
                     "manifest offset": 0, "manifest length": 100, "id": tag + tag},
    }
    raw_info = benc(info)
    body = benc({"created by": "bench-tracker", "creation date": 1700000000, "info": info})
    assert raw_info in body
    return hashlib.sha1(raw_info).hexdigest(), body


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    url = sys.argv[3] if len(sys.argv) > 3 else None
    made = [torrent(i) for i in range(n)]
    with open(out, "w") as f:
        for ih, _ in made:
            f.write(ih + "\n")
    if not url:
        return
    u = urllib.parse.urlsplit(url)
    errors = []

    def worker(part):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        for ih, body in part:
            c.request("POST", "%s/publish?machine=age1benchtracker&name=bench" % u.path.rstrip("/"),
                      body=body, headers={"Content-Type": "application/x-bittorrent"})
            r = c.getresponse()
            got = r.read()
            if r.status not in (200, 201) or ih.encode() not in got:
                errors.append("%s: %d %s" % (ih, r.status, got[:200]))
                return

    threads = [threading.Thread(target=worker, args=(made[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("publish failed: " + errors[0])


if __name__ == "__main__":
    main()
