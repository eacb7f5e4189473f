#!/usr/bin/python3
"""Makes N small swarmbak torrents and publishes them to a swarmbak tracker; makes passkeys.

  torrents.py publish N HASHES_OUT [URL [TOKEN]]
  torrents.py passkeys URL ADMIN_TOKEN_FILE N OUT
  torrents.py count SCRAPE_URL HASHES_FILE
  torrents.py self-test TRUST_MD

publish: each torrent is a valid swarmbak torrent (private, one stripe of k=2 data and m=1
  parity shards of 16 KiB: what crates/tracker/tests/tracker.rs publishes), made here
  without swarmbak. Writes the info-hashes (hex, one a line, in order) to HASHES_OUT and,
  with URL, POSTs each to the tracker over a few keep-alive connections. With TOKEN (what
  `swarmbak tracker enroll` printed) it first enrols one machine as `swarmbak init
  --enroll TOKEN` does (an ed25519 key made here, the signed enrolment request of
  protocol-spec/trust.md §6 to POST URL/api/v1/enroll, the certificate checked against
  the token's organisation key) and publishes every torrent as that machine, to
  URL/<passkey>/publish with a publish record signed per trust.md §4 in Swarmbak-Record
  and its certificate in Swarmbak-Certificate (tracker.md §7.4). Without TOKEN (an
  --open tracker): unsigned publishes, `?machine=...&name=...`.
passkeys: N client passkeys from the admin API (POST URL/api/v1/enrollments with
  {"name": ..., "client": true} and the bearer token in ADMIN_TOKEN_FILE), one a line to
  OUT, each checked to be the passkey of its announce URL.
count: scrapes those torrents at SCRAPE_URL (e.g. BASE/<passkey>/scrape), 50 info-hashes a
  request, and prints the sum of complete + incomplete; every torrent must be answered.
self-test: encodes trust.md §8's examples (keys, certificate, publish record, revocation,
  enrolment request, token) from the spec's seeds with this file's encoder and compares
  them with the hex and text in TRUST_MD, byte for byte; parses the token back. Exits 1
  on the first difference.
Any failure exits non-zero with a message.
"""
import base64
import hashlib
import http.client
import json
import re
import sys
import threading
import time
import urllib.parse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


# --- bencode -------------------------------------------------------------------------

def benc(v):
    if isinstance(v, bool):
        raise TypeError(v)
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(benc(k) + benc(x) for k, x in items) + b"e"
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    raise TypeError(v)


def bdec(b, strict=True):
    """Decodes one bencoded value that is all of b (strings stay bytes); strict: the
    dictionary keys must be sorted (canonical)."""
    def one(i):
        c = b[i:i + 1]
        if c == b"i":
            j = b.index(b"e", i)
            return int(b[i + 1:j]), j + 1
        if c == b"l":
            out, i = [], i + 1
            while b[i:i + 1] != b"e":
                v, i = one(i)
                out.append(v)
            return out, i + 1
        if c == b"d":
            out, i, last = {}, i + 1, None
            while b[i:i + 1] != b"e":
                k, i = one(i)
                if not isinstance(k, bytes) or (strict and last is not None and k <= last):
                    raise ValueError("dictionary keys not sorted byte strings")
                last = k
                out[k], i = one(i)
            return out, i + 1
        if c.isdigit():
            j = b.index(b":", i)
            n = int(b[i:j])
            if j + 1 + n > len(b):
                raise ValueError("string runs past the end")
            return b[j + 1:j + 1 + n], j + 1 + n
        raise ValueError("bad bencode at %d" % i)
    v, end = one(0)
    if end != len(b):
        raise ValueError("trailing bytes after bencoded value")
    return v


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64u(s):
    s = s.strip()
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# --- trust.md: keys, envelopes, records, tokens --------------------------------------

PREFIX = {
    "certificate": b"swarmbak-certificate-v1\0",
    "publish": b"swarmbak-publish-v1\0",
    "revocation": b"swarmbak-revocation-v1\0",
    "enroll": b"swarmbak-enroll-v1\0",
}
TOKEN_PREFIX = "swarmbak-enroll-1."


def key_from_seed(seed):
    return Ed25519PrivateKey.from_private_bytes(seed)


def public(key):
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(pub):
    return "SHA256:" + hashlib.sha256(pub).digest()[:16].hex()


def sign(kind, key, body):
    """trust.md §2: d 4:body <body bytes> 3:sig 64:<sig over prefix + body> e."""
    body_bytes = benc(body)
    sig = key.sign(PREFIX[kind] + body_bytes)
    return b"d4:body" + benc(body_bytes) + b"3:sig" + benc(sig) + b"e"


def open_envelope(kind, pub, env):
    """Checks the signature first (trust.md §2), then returns the body's dictionary."""
    d = bdec(env)
    if set(d) != {b"body", b"sig"} or len(d[b"sig"]) != 64:
        raise ValueError("not a signed envelope")
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(d[b"sig"], PREFIX[kind] + d[b"body"])
    except InvalidSignature:
        raise ValueError("%s signature does not verify" % kind)
    return bdec(d[b"body"])


def certificate(org, machine_pub, age, name, issued, user=None, vip=False, domain=None, expires=None):
    body = {"age": age, "issued": issued, "key": machine_pub, "name": name, "org": public(org),
            "vip": 1 if vip else 0}
    for k, v in (("user", user), ("domain", domain), ("expires", expires)):
        if v is not None:
            body[k] = v
    return sign("certificate", org, body)


def publish_record(machine, infohash, copies, published):
    return sign("publish", machine,
                {"copies": copies, "infohash": infohash, "key": public(machine), "published": published})


def revocation(org, machine_pub, name, revoked):
    return sign("revocation", org, {"key": machine_pub, "name": name, "org": public(org), "revoked": revoked})


def enrol_request(machine, age, secret):
    return sign("enroll", machine, {"age": age, "key": public(machine), "secret": secret})


def token_text(org_pub, secret, url, tls=None):
    d = {"org": org_pub, "secret": secret, "url": url}
    if tls is not None:
        d["tls"] = tls
    return TOKEN_PREFIX + b64u(benc(d))


def parse_token(text):
    """trust.md §7: (org public key, secret, url, tls pin or None)."""
    text = text.strip()
    if not text.startswith(TOKEN_PREFIX):
        raise ValueError("not an enrolment token: %r" % text[:40])
    d = bdec(unb64u(text[len(TOKEN_PREFIX):]))
    org, secret, url, tls = d.get(b"org"), d.get(b"secret"), d.get(b"url"), d.get(b"tls")
    if not (isinstance(org, bytes) and len(org) == 32 and isinstance(secret, bytes) and len(secret) == 32
            and isinstance(url, bytes) and (tls is None or (isinstance(tls, bytes) and len(tls) == 32))):
        raise ValueError("malformed enrolment token")
    return org, secret, url.decode(), tls


# --- self-test against trust.md §8 ---------------------------------------------------

def self_test(spec_path):
    text = open(spec_path, encoding="utf-8").read()
    at = text.find("## 8. Examples")
    if at < 0:
        sys.exit("self-test: no '## 8. Examples' in %s" % spec_path)
    end = text.find("\n## ", at + 1)
    section = text[at:] if end < 0 else text[at:end]
    blocks = re.findall(r"```text\n(.*?)```", section, re.S)
    if len(blocks) != 6:
        sys.exit("self-test: expected 6 example blocks in trust.md §8, found %d" % len(blocks))
    keys_block, cert_hex, record_hex, revocation_hex, enrol_hex, token_block = blocks
    hexblock = lambda s: "".join(s.split())
    org, machine = key_from_seed(b"\x0a" * 32), key_from_seed(b"\x01" * 32)
    age = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    secret = b"\x5e" * 32
    failures = []

    def check(what, got, want):
        if got != want:
            failures.append("%s:\n  spec: %s\n  ours: %s" % (what, want, got))

    fields = dict(re.findall(r"^(organisation public key|its fingerprint|machine public key)\s+(\S+)\s*$",
                             keys_block, re.M))
    if len(fields) != 3:
        sys.exit("self-test: the key lines of trust.md §8 changed form: %r" % keys_block)
    check("organisation public key", public(org).hex(), fields["organisation public key"])
    check("its fingerprint", fingerprint(public(org)), fields["its fingerprint"])
    check("machine public key", public(machine).hex(), fields["machine public key"])
    cert = certificate(org, public(machine), age, "laptop-7", 1796000000, user="ana", vip=True, domain="hq/2.14")
    check("certificate", cert.hex(), hexblock(cert_hex))
    rec = publish_record(machine, b"\xab" * 20, 2, 1796100000)
    check("publish record", rec.hex(), hexblock(record_hex))
    check("revocation", revocation(org, public(machine), "laptop-7", 1796200000).hex(), hexblock(revocation_hex))
    check("enrolment request", enrol_request(machine, age, secret).hex(), hexblock(enrol_hex))
    tok = token_text(public(org), secret, "http://10.0.0.5:7070")
    check("token", tok, token_block.strip())
    try:
        check("token parsed back", parse_token(token_block), (public(org), secret, "http://10.0.0.5:7070", None))
        body = open_envelope("publish", public(machine), bytes.fromhex(hexblock(record_hex)))
        check("record read back", body, {b"copies": 2, b"infohash": b"\xab" * 20, b"key": public(machine),
                                          b"published": 1796100000})
        # A signature made for one kind must not verify as another (the prefixes).
        try:
            open_envelope("certificate", public(machine), rec)
            failures.append("a publish record verified as a certificate")
        except ValueError:
            pass
    except ValueError as e:
        failures.append("reading the spec's examples back: %s" % e)
    if failures:
        sys.exit("self-test FAILED against %s (the Python encoder no longer matches the spec):\n%s"
                 % (spec_path, "\n".join(failures)))
    print("self-test: trust.md §8 reproduced byte for byte (keys, fingerprint, certificate, publish record, "
          "revocation, enrolment request, token)", file=sys.stderr)


# --- torrents, enrolment, publishing -------------------------------------------------

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


def conn(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http":
        sys.exit("only http:// trackers here: %s" % url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60), u.path.rstrip("/")


def enrol(url, token):
    """Enrols a fresh machine key with TOKEN at URL: (key, passkey, certificate bytes)."""
    org_pub, secret, token_url, _tls = parse_token(token)
    machine = Ed25519PrivateKey.generate()
    # Any syntactically valid age recipient: the bench never encrypts to it.
    age = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    c, base = conn(url)
    c.request("POST", base + "/api/v1/enroll", body=enrol_request(machine, age, secret),
              headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse()
    got = r.read()
    if r.status != 201:
        sys.exit("enrolment refused by %s (token for %s): %d %s" % (url, token_url, r.status, got[:300]))
    a = json.loads(got)
    cert = unb64u(a["certificate"])
    # As init does: the certificate must be the token's organisation's, for our key.
    try:
        body = open_envelope("certificate", org_pub, cert)
    except ValueError as e:
        sys.exit("enrolment: the certificate does not verify with the token's organisation key: %s" % e)
    if body.get(b"org") != org_pub or body.get(b"key") != public(machine):
        sys.exit("enrolment: the certificate does not name the token's organisation and our key")
    if a.get("org_key") != org_pub.hex():
        sys.exit("enrolment: the tracker's organisation key %s is not the token's" % a.get("org_key"))
    if not re.fullmatch(r"[0-9a-f]{32}", a.get("passkey", "")):
        sys.exit("enrolment: bad passkey %r" % a.get("passkey"))
    print("enrolled %s (key %s, passkey %s...)" % (a["name"], fingerprint(public(machine)), a["passkey"][:8]),
          file=sys.stderr)
    return machine, a["passkey"], cert


def publish(n, out, url=None, token=None):
    made = [torrent(i) for i in range(n)]
    with open(out, "w") as f:
        for ih, _ in made:
            f.write(ih + "\n")
    if not url:
        return
    signed = enrol(url, token) if token else None
    errors = []

    def worker(part):
        c, base = conn(url)
        for ih, body in part:
            if signed:
                machine, passkey, cert = signed
                rec = publish_record(machine, bytes.fromhex(ih), 2, int(time.time()))
                target = "%s/%s/publish" % (base, passkey)
                headers = {"Swarmbak-Record": b64u(rec), "Swarmbak-Certificate": b64u(cert)}
            else:
                target = "%s/publish?machine=age1benchtracker&name=bench" % base
                headers = {}
            headers["Content-Type"] = "application/x-bittorrent"
            c.request("POST", target, body=body, headers=headers)
            r = c.getresponse()
            got = r.read()
            if r.status not in (200, 201) or ih.encode() not in got:
                errors.append("%s: %d %s" % (ih, r.status, got[:300]))
                return

    threads = [threading.Thread(target=worker, args=(made[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("publish failed: " + errors[0])


def passkeys(url, admin_token_file, n, out):
    admin = open(admin_token_file).read().strip()
    c, base = conn(url)
    keys = []
    for i in range(n):
        c.request("POST", base + "/api/v1/enrollments",
                  body=json.dumps({"name": "bench-client-%05d" % i, "client": True}),
                  headers={"Authorization": "Bearer " + admin, "Content-Type": "application/json"})
        r = c.getresponse()
        got = r.read()
        if r.status != 201:
            sys.exit("client enrolment %d refused: %d %s" % (i, r.status, got[:300]))
        a = json.loads(got)
        pk = a.get("passkey", "")
        if not re.fullmatch(r"[0-9a-f]{32}", pk) or not a.get("announce_url", "").endswith("/%s/announce" % pk):
            sys.exit("client enrolment %d: unexpected answer %s" % (i, got[:300]))
        keys.append(pk)
    if len(set(keys)) != n:
        sys.exit("client enrolment: %d passkeys for %d clients" % (len(set(keys)), n))
    with open(out, "w") as f:
        f.write("".join(k + "\n" for k in keys))


def count(scrape_url, hashes_file):
    hashes = [l.strip() for l in open(hashes_file) if l.strip()]
    total = 0
    for at in range(0, len(hashes), 50):
        part = hashes[at:at + 50]
        c, path = conn(scrape_url)
        q = "&".join("info_hash=" + urllib.parse.quote(bytes.fromhex(h), safe="") for h in part)
        c.request("GET", "%s?%s" % (path, q))
        r = c.getresponse()
        got = r.read()
        c.close()
        try:
            files = bdec(got, strict=False)[b"files"]
            for h in part:
                f = files[bytes.fromhex(h)]
                total += f[b"complete"] + f[b"incomplete"]
        except (ValueError, KeyError, TypeError) as e:
            sys.exit("scrape of %s: %d %r (%s)" % (scrape_url, r.status, got[:300], e))
    print(total)


def main():
    a = sys.argv[1:]
    if a[:1] == ["self-test"] and len(a) == 2:
        self_test(a[1])
    elif a[:1] == ["publish"] and 3 <= len(a) <= 5:
        publish(int(a[1]), a[2], *a[3:])
    elif a[:1] == ["count"] and len(a) == 3:
        count(a[1], a[2])
    elif a[:1] == ["passkeys"] and len(a) == 5:
        passkeys(a[1], a[2], int(a[3]), a[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
