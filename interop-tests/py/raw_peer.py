#!/usr/bin/python3
"""A minimal BEP 3 peer with every reserved bit zero (no fast extension, no extension
protocol, no DHT): it downloads a few pieces from one peer and checks their SHA-1.

Usage: raw_peer.py TORRENT HOST:PORT NUM_PIECES TIMEOUT
Prints one JSON line: the message ids received, the pieces verified, the peer's reserved
bits. Exit 0 when NUM_PIECES pieces verified and no BEP 6 (13-17) or BEP 10 (20) message
arrived.
"""

import hashlib
import json
import os
import socket
import struct
import sys
import time

import libtorrent as lt

BLOCK = 16384
NAMES = {0: "choke", 1: "unchoke", 2: "interested", 3: "not_interested", 4: "have",
         5: "bitfield", 6: "request", 7: "piece", 8: "cancel", 9: "port", 13: "suggest",
         14: "have_all", 15: "have_none", 16: "reject", 17: "allowed_fast", 20: "extended"}


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("peer closed the connection")
        buf += chunk
    return buf


def main(torrent, addr, want, timeout):
    ti = lt.torrent_info(torrent)
    ih = bytes.fromhex(str(ti.info_hash()))
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.settimeout(timeout)
    deadline = time.time() + timeout
    peer_id = b"-PL0001-" + os.urandom(12)
    s.sendall(b"\x13BitTorrent protocol" + b"\x00" * 8 + ih + peer_id)
    hs = recv_exact(s, 68)
    assert hs[1:20] == b"BitTorrent protocol", hs
    their_reserved = hs[20:28].hex()
    assert hs[28:48] == ih, "handshake for another torrent"
    received = {}
    have = set()
    got = {}
    verified = []
    unchoked = False
    requested = False
    targets = []
    s.sendall(struct.pack(">IB", 1, 2))  # interested
    while time.time() < deadline and len(verified) < want:
        (length,) = struct.unpack(">I", recv_exact(s, 4))
        if length == 0:
            received["keep_alive"] = received.get("keep_alive", 0) + 1
            continue
        body = recv_exact(s, length)
        mid = body[0]
        name = NAMES.get(mid, "id%d" % mid)
        received[name] = received.get(name, 0) + 1
        if mid == 5:
            bits = body[1:]
            for i in range(ti.num_pieces()):
                if bits[i // 8] & (0x80 >> (i % 8)):
                    have.add(i)
        elif mid == 4:
            have.add(struct.unpack(">I", body[1:5])[0])
        elif mid == 1:
            unchoked = True
        elif mid == 0:
            unchoked = False
            requested = False  # BEP 3: a choke drops our requests
        elif mid == 7:
            idx, off = struct.unpack(">II", body[1:9])
            got.setdefault(idx, {})[off] = body[9:]
            size = ti.piece_size(idx)
            blocks = got[idx]
            if sum(len(b) for b in blocks.values()) == size and idx not in verified:
                data = b"".join(blocks[o] for o in sorted(blocks))
                if hashlib.sha1(data).digest() != ti.hash_for_piece(idx):
                    print(json.dumps({"error": "piece %d failed its SHA-1 check" % idx}))
                    return 1
                verified.append(idx)
        if unchoked and not requested and have:
            targets = sorted(have)[:want]
            for idx in targets:
                if idx in verified:
                    continue
                size = ti.piece_size(idx)
                for off in range(0, size, BLOCK):
                    ln = min(BLOCK, size - off)
                    s.sendall(struct.pack(">IBIII", 13, 6, idx, off, ln))
            requested = True
    s.close()
    forbidden = sorted(n for n in received if n in ("suggest", "have_all", "have_none",
                                                     "reject", "allowed_fast", "extended"))
    res = {"their_reserved": their_reserved, "received": received, "verified": verified,
           "forbidden": forbidden}
    print(json.dumps(res), flush=True)
    return 0 if len(verified) >= want and not forbidden else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
