#!/usr/bin/python3
"""Generates v1 torrents, valid and mutated, for the metainfo differential test.

Usage: gen_torrents.py SEED OUT_DIR

Writes OUT_DIR/NNNN.torrent and OUT_DIR/manifest.json, a list of
{"file": "NNNN.torrent", "category": "...", "note": "..."}. The same SEED writes the same
files (the hybrid torrents are made by libtorrent's create_torrent with a fixed creation
date, so they are deterministic too).

Dictionaries are written in the order given (a python dict keeps insertion order), never
sorted unless asked: unsorted keys are part of what is tested. `Pairs` writes repeated
keys; `Raw` is spliced in verbatim (non-canonical integers, broken encodings).
"""

import json
import os
import random
import sys
import tempfile


class Raw(bytes):
    """Bytes written as they are, not as a bencoded string."""


class Pairs(list):
    """A dictionary as a list of (key, value), written in order, repeats allowed."""


def benc(v, out=None, sort=False):
    if out is None:
        out = bytearray()
    if isinstance(v, Raw):
        out += v
    elif isinstance(v, bool):
        raise TypeError("bool")
    elif isinstance(v, int):
        out += b"i%de" % v
    elif isinstance(v, str):
        benc(v.encode(), out, sort)
    elif isinstance(v, (bytes, bytearray)):
        out += b"%d:" % len(v) + bytes(v)
    elif isinstance(v, list) and not isinstance(v, Pairs):
        out += b"l"
        for x in v:
            benc(x, out, sort)
        out += b"e"
    elif isinstance(v, (dict, Pairs)):
        items = list(v.items()) if isinstance(v, dict) else list(v)
        items = [(k.encode() if isinstance(k, str) else k, x) for k, x in items]
        if sort:
            items.sort(key=lambda kv: kv[0])
        out += b"d"
        for k, x in items:
            benc(k, out, sort)
            benc(x, out, sort)
        out += b"e"
    else:
        raise TypeError(type(v))
    return bytes(out)


KIB = 1024
PIECE_SIZES = [16 * KIB * (1 << i) for i in range(11)]  # 16 KiB .. 16 MiB


class Gen:
    def __init__(self, seed, out_dir):
        self.r = random.Random(seed)
        self.out_dir = out_dir
        self.manifest = []

    def emit(self, category, data, note=""):
        name = "%04d.torrent" % len(self.manifest)
        with open(os.path.join(self.out_dir, name), "wb") as f:
            f.write(data)
        self.manifest.append({"file": name, "category": category, "note": note})

    # ---- building blocks -------------------------------------------------------------

    def hashes(self, n):
        return bytes(self.r.getrandbits(8) for _ in range(20 * n))

    def name(self):
        return "n%d-%s" % (self.r.randrange(10**6), self.r.choice(["a", "bb", "ü", "x y"]))

    def pieces_for(self, total, plen):
        return self.hashes(-(-total // plen))

    def single_info(self, plen=None, length=None):
        plen = plen or self.r.choice(PIECE_SIZES)
        length = length if length is not None else self.r.randrange(1, plen * 5)
        return {
            "name": self.name(),
            "length": length,
            "piece length": plen,
            "pieces": self.pieces_for(length, plen),
        }

    def multi_info(self, plen=None, nfiles=None, padding=False, paths=None):
        plen = plen or self.r.choice(PIECE_SIZES)
        nfiles = nfiles or self.r.randrange(2, 7)
        files = []
        total = 0
        for i in range(nfiles):
            length = self.r.randrange(0, plen * 2) if i else self.r.randrange(1, plen * 2)
            path = paths[i] if paths and i < len(paths) else ["d%d" % self.r.randrange(3), "f%d.bin" % i]
            files.append({"length": length, "path": path})
            total += length
            if padding and i + 1 < nfiles and total % plen:
                pad = plen - total % plen
                files.append({"attr": "p", "length": pad, "path": [".pad", str(pad)]})
                total += pad
        return {
            "files": files,
            "name": self.name(),
            "piece length": plen,
            "pieces": self.pieces_for(total, plen),
        }

    def torrent(self, info, sort=True, outer_extra=None, private=None):
        if private is not None:
            info["private"] = private
        top = {"announce": "http://127.0.0.1:1/announce", "info": info}
        if outer_extra:
            top.update(outer_extra)
        return benc(top, sort=sort)

    def shuffled(self, d):
        items = list(d.items())
        self.r.shuffle(items)
        return dict(items)

    def shuffled_info(self, info):
        items = list(info.items())
        while True:
            self.r.shuffle(items)
            if [k for k, _ in items] != sorted(k for k, _ in items):
                return dict(items)

    def any_info(self):
        return self.single_info() if self.r.random() < 0.5 else self.multi_info()

    # ---- valid -----------------------------------------------------------------------

    def valid(self):
        r = self.r
        for plen in PIECE_SIZES:
            self.emit("valid_single", self.torrent(self.single_info(plen)), "piece length %d" % plen)
            self.emit("valid_multi", self.torrent(self.multi_info(plen)), "piece length %d" % plen)
            self.emit("valid_padding", self.torrent(self.multi_info(plen, padding=True)), "BEP 47 pad files, piece length %d" % plen)
        for _ in range(30):
            info = self.multi_info(padding=True) if r.random() < 0.3 else self.any_info()
            self.emit("valid_random", self.torrent(info, private=r.choice([None, 0, 1])), "random shape")
        for _ in range(8):
            info = self.shuffled(self.any_info())
            if "files" in info:
                info["files"] = [self.shuffled(f) for f in info["files"]]
            top = self.shuffled({"announce": "http://127.0.0.1:1/announce", "info": info, "comment": "c"})
            self.emit("valid_unsorted_keys", benc(top), "keys in random order")
        for _ in range(6):
            info = self.any_info()
            info["zz unknown"] = self.r.choice([1, "x", [1, "y"], {"k": "v"}])
            info["a unknown"] = {"nested": [1, 2, {"deep": "x"}]}
            self.emit("valid_extra_keys", self.torrent(info, outer_extra={"x-extra": [1, "two"], "azureus_properties": {"k": 1}}), "unknown keys")
        for p in [0, 1, 0, 1, 2, "1"]:
            self.emit("valid_private", self.torrent(self.any_info(), private=p), "private=%r" % (p,))
        for _ in range(5):
            info = self.any_info()
            dup = Pairs(list(info.items()))
            dup.append(("name", "second-name"))
            self.emit("valid_duplicate_keys", benc({"info": dup}), "name given twice; first wins")
        for _ in range(4):
            data = self.torrent(self.any_info())
            junk = self.r.choice([b"garbage", b"\x00\x01", b"d4:spam4:eggse", b"i1e"])
            self.emit("trailing_garbage", data + junk, "trailing %r" % junk)
        for _ in range(3):
            info = self.multi_info()
            info["files"][0]["path.utf-8"] = ["utf8-" + "é", "name"]
            self.emit("valid_utf8_keys", self.torrent(info), "path.utf-8 beside path")
        # Piece lengths that are not powers of two (libtorrent does not require them).
        for plen in [1, 1000, 16385, 3 * 16384 + 7]:
            self.emit("valid_odd_piece_length", self.torrent(self.single_info(plen, self.r.randrange(1, 40000))), "piece length %d" % plen)

    def hybrid(self):
        import libtorrent as lt

        with tempfile.TemporaryDirectory() as tmp:
            for i in range(10):
                root = os.path.join(tmp, "h%d" % i)
                os.makedirs(root)
                fs = lt.file_storage()
                nfiles = 1 + i % 3
                for j in range(nfiles):
                    rel = "h%d/f%d" % (i, j)
                    size = self.r.randrange(1, 100000)
                    with open(os.path.join(tmp, rel), "wb") as f:
                        f.write(bytes(self.r.getrandbits(8) for _ in range(size)))
                    fs.add_file(rel, size)
                plen = self.r.choice(PIECE_SIZES[:4])
                flags = lt.create_torrent.v2_only if i >= 7 else 0
                ct = lt.create_torrent(fs, plen, flags=flags)
                ct.set_priv(i % 2 == 1)
                lt.set_piece_hashes(ct, tmp)
                entry = ct.generate()
                entry[b"creation date"] = 1700000000
                data = lt.bencode(entry)
                if i >= 7:
                    self.emit("v2_only", data, "libtorrent create_torrent v2_only")
                else:
                    self.emit("valid_hybrid", data, "libtorrent create_torrent (v1+v2), %d files" % nfiles)
        # meta version other than 2: libtorrent reads <= 1 as v1 (sorted keys needed when
        # positive) and rejects > 2.
        for v in [1, 0, -1, 1, "2"]:
            info = self.any_info()
            info["meta version"] = v
            self.emit("meta_version_v1", self.torrent(info), "meta version %r, sorted keys" % (v,))
        for v in [3, 7, 2**32 + 3]:
            info = self.any_info()
            info["meta version"] = v
            self.emit("bad_meta_version", self.torrent(info), "meta version %d" % v)
        for v in [1, 1, 2]:
            info = self.any_info()
            info["meta version"] = v
            if v == 2:
                info["file tree"] = {}
            self.emit("meta_version_unsorted", self.torrent(self.shuffled_info(info), sort=False), "meta version %d, unsorted keys" % v)
        for i in range(3):
            info = self.any_info()
            info["file tree"] = {"a": {"": {"length": 5, "pieces root": self.hashes(2)[:32]}}}
            if i == 2:
                info["meta version"] = 1
            self.emit("file_tree_without_v2", self.torrent(info), "file tree, meta version %s" % ("1" if i == 2 else "absent"))

    # ---- paths libtorrent accepts and rewrites ------------------------------------------

    def unsafe(self):
        bad = [
            ["..", "etc", "passwd"],
            ["a", "..", "..", "b"],
            ["/etc", "x"],
            ["", "x"],
            ["a", ""],
            [".", "y"],
            ["a/b", "c"],
            ["C:", "win"],
            ["\\abs", "x"],
        ]
        for comps in bad:
            info = self.multi_info(nfiles=3, paths=[["ok", "f"], comps])
            self.emit("unsafe_path", self.torrent(info), "path %r" % (comps,))
        for name in ["..", "/abs", "a/b"]:
            info = self.multi_info()
            info["name"] = name
            self.emit("unsafe_path", self.torrent(info), "multi-file name %r" % name)

    # ---- rejections (or not: libtorrent decides, the test checks agreement) -----------

    def mutations(self):
        r = self.r
        for _ in range(3):
            for key in ["name", "piece length", "pieces"]:
                info = self.any_info()
                del info[key]
                self.emit("missing_" + key.replace(" ", "_"), self.torrent(info), "no %s" % key)
            info = self.single_info()
            del info["length"]
            self.emit("missing_length", self.torrent(info), "single-file without length")
            info = self.multi_info()
            del info["files"][r.randrange(len(info["files"]))]["length"]
            self.emit("missing_length", self.torrent(info), "a files entry without length")
            info = self.multi_info()
            del info["files"][r.randrange(len(info["files"]))]["path"]
            self.emit("missing_path", self.torrent(info), "a files entry without path")
        wrong = [5, "x", [1], {"a": 1}, b""]
        for i in range(4):
            for key in ["name", "piece length", "pieces", "length"]:
                info = self.single_info()
                info[key] = wrong[(i + len(key)) % len(wrong)]
                self.emit("mistyped_" + key.replace(" ", "_"), self.torrent(info), "%s = %r" % (key, info[key]))
        for i in range(4):
            info = self.multi_info()
            f = info["files"][r.randrange(len(info["files"]))]
            f["path"] = ["x", 5] if i == 0 else ("x/y" if i == 1 else ({"a": "b"} if i == 2 else [["x"]]))
            self.emit("mistyped_path", self.torrent(info), "path = %r" % (f["path"],))
            info = self.multi_info()
            info["files"] = ["x", 7, {"a": 1}, [["x"]]][i]
            self.emit("mistyped_files", self.torrent(info), "files = %r, no length" % (info["files"],))
            info = self.multi_info()
            info["files"][r.randrange(len(info["files"]))]["length"] = ["1", [1], {"x": 1}, b""][i]
            self.emit("mistyped_length", self.torrent(info), "a files entry's length mistyped")
            info = self.multi_info()
            info["files"][r.randrange(len(info["files"]))] = ["x", 5, [1], b""][i]
            self.emit("mistyped_file_entry", self.torrent(info), "a files entry that is not a dictionary")
        for i in range(3):
            # files that is not a list, beside a good length
            info = self.single_info()
            info["files"] = ["x", 7, {"a": 1}][i]
            self.emit("mistyped_files_with_length", self.torrent(info), "files = %r beside length" % (info["files"],))
            info = self.multi_info()
            info["files"][r.randrange(len(info["files"]))]["path"] = []
            self.emit("empty_path", self.torrent(info), "path = []")
            info = self.multi_info()
            info["files"] = []
            self.emit("empty_files", self.torrent(info), "files = []")
        for i in range(4):
            info = self.single_info()
            info["length"] = -r.randrange(1, 10**6) if i else -1
            self.emit("negative_length", self.torrent(info), "length %d" % info["length"])
            info = self.multi_info()
            info["files"][r.randrange(len(info["files"]))]["length"] = -r.randrange(1, 10**6)
            self.emit("negative_length", self.torrent(info), "a files entry with a negative length")
            info = self.single_info()
            info["piece length"] = -[1, 16384, 2**20, 7][i]
            self.emit("negative_piece_length", self.torrent(info), "piece length %d" % info["piece length"])
        for i in range(3):
            info = self.single_info()
            info["piece length"] = 0
            self.emit("zero_piece_length", self.torrent(info), "piece length 0")
        for plen in [2**30, 2**30 + 16384, 2**31, 2**40, 2**30 - 1, 2**29]:
            info = self.single_info(plen=plen, length=r.randrange(1, 2**20))
            self.emit("large_piece_length", self.torrent(info), "piece length %d" % plen)
        for i in range(5):
            info = self.any_info()
            cut = [1, 19, 21, 39, 7][i]
            info["pieces"] = info["pieces"] + b"x" * (cut % 20) if i % 2 else info["pieces"][:-cut] if len(info["pieces"]) > cut else b"x" * cut
            self.emit("pieces_not_multiple_of_20", self.torrent(info), "pieces %d bytes" % len(info["pieces"]))
        for i in range(6):
            info = self.any_info()
            if i % 3 == 0:
                info["pieces"] += self.hashes(1)
            elif i % 3 == 1 and len(info["pieces"]) > 20:
                info["pieces"] = info["pieces"][:-20]
            else:
                info["pieces"] = b""
            self.emit("wrong_piece_count", self.torrent(info), "%d hashes" % (len(info["pieces"]) // 20))
        for i in range(4):
            info = self.single_info()
            info["length"] = 0
            info["pieces"] = b""
            if i % 2:
                info = self.multi_info()
                for f in info["files"]:
                    f["length"] = 0
                info["pieces"] = b""
            self.emit("zero_total_length", self.torrent(info), "all lengths 0")
        for name in ["", ".", "..", "/", "./..", "a/..", "/..", ".\0.", "\0a", "//", "../.."]:
            info = self.single_info()
            info["name"] = name
            self.emit("bad_single_name", self.torrent(info), "single-file name %r" % name)
        for a, b in [(2**62, 2**62), (2**63 - 1, 1), (2**63 - 1, 2**63 - 1)]:
            info = self.multi_info(plen=2**29, nfiles=2)
            info["files"][0]["length"] = a
            info["files"][1]["length"] = b
            info["pieces"] = b""
            self.emit("length_overflow", self.torrent(info), "lengths %d + %d" % (a, b))
        # Deep nesting in an unknown key of the info dictionary, around libtorrent's limit.
        for depth in [10, 96, 97, 98, 99, 100, 101, 150, 5000]:
            info = self.any_info()
            info["zz deep"] = Raw(b"l" * depth + b"e" * depth)
            self.emit("deep_nesting", self.torrent(info), "%d nested lists" % depth)
        for _ in range(16):
            data = self.torrent(self.any_info())
            cut = r.randrange(1, len(data) - 1)
            self.emit("truncated", data[:cut], "cut at %d of %d" % (cut, len(data)))
        for data, note in [
            (b"", "empty file"),
            (b"le", "empty list"),
            (b"i42e", "an integer"),
            (b"4:spam", "a string"),
            (b"hello", "not bencode"),
            (b"d4:infoi1ee", "info is an integer"),
            (b"d4:infol4:nameee", "info is a list"),
            (b"d8:announce1:xe", "no info"),
            (b"di1e4:infoe", "integer key"),
        ]:
            self.emit("not_a_torrent", data, note)
        # libtorrent 2.0.8 accepts these non-canonical encodings; swarmbak refuses them.
        for i in range(6):
            info = self.single_info()
            enc = self.torrent(info)
            plen = b"12:piece lengthi%de" % info["piece length"]
            if i % 3 == 0:
                data = enc.replace(plen, b"12:piece lengthi0%de" % info["piece length"], 1)
                note = "piece length with a leading zero"
            elif i % 3 == 1:
                info["zz"] = Raw(b"i-0e")
                data = self.torrent(info)
                note = "i-0e in an unknown key"
            else:
                data = enc.replace(b"4:name", b"04:name", 1)
                note = "string length 04"
            assert data != enc or i % 3 == 1
            self.emit("noncanonical_bencode", data, note)


def main():
    seed = int(sys.argv[1])
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    g = Gen(seed, out_dir)
    g.valid()
    g.hybrid()
    g.unsafe()
    g.mutations()
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(g.manifest, f, indent=0)
    print(len(g.manifest))


if __name__ == "__main__":
    main()
