#!/usr/bin/python3
"""libtorrent as the oracle for .torrent parsing.

Usage: lt_oracle.py FILE...   (or the paths one a line on stdin when no FILE is given)

Prints one JSON object a line, in the order given:
{"file": PATH, "accepted": bool, "error": str|null, "info_hash": hex v1 info-hash,
 "num_pieces": int, "num_files": int, "files": [path, ...], "pad": [bool, ...],
 "private": bool}
Each file is loaded with lt.torrent_info(raw_bytes), which hashes the info dictionary's
bytes as they appear (lt.torrent_info(lt.bdecode(...)) would re-encode and re-hash).
"""

import json
import sys

import libtorrent as lt


def main():
    paths = sys.argv[1:] or [l.rstrip("\n") for l in sys.stdin if l.strip()]
    print(json.dumps({"libtorrent": lt.__version__}), flush=True)
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        out = {"file": p}
        try:
            ti = lt.torrent_info(data)
        except Exception as e:  # RuntimeError with libtorrent's message
            out.update(accepted=False, error=str(e))
        else:
            fs = ti.files()
            n = fs.num_files()
            out.update(
                accepted=True,
                error=None,
                info_hash=str(ti.info_hashes().v1),
                num_pieces=ti.num_pieces(),
                num_files=n,
                files=[fs.file_path(i) for i in range(n)],
                pad=[bool(fs.file_flags(i) & lt.file_storage.flag_pad_file) for i in range(n)],
                private=ti.priv(),
            )
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
