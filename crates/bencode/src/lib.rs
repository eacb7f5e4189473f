//! Bencode (BEP 3): placeholder, filled in by the bencode work.
