//! URL query strings: percent-decoding (binary-safe, as BitTorrent needs for `info_hash`
//! and `peer_id`) and percent-encoding.

use std::fmt;

/// A query string that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `input` into `out` (cleared first). `+` becomes a space, as in
/// form encoding (opentracker does the same); a `%` not followed by two hex digits is an
/// error.
pub fn percent_decode_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), QueryError> {
    out.clear();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hi = input.get(i + 1).copied().and_then(hex_val);
                let lo = input.get(i + 2).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => {
                        return Err(QueryError(
                            "malformed percent-encoding in the query string".into(),
                        ))
                    }
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(())
}

/// Percent-decodes `input` into a new vector.
pub fn percent_decode(input: &[u8]) -> Result<Vec<u8>, QueryError> {
    let mut out = Vec::with_capacity(input.len());
    percent_decode_into(input, &mut out)?;
    Ok(out)
}

/// Appends `bytes` percent-encoded to `out`: RFC 3986 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) stay, every other byte becomes `%XX` (upper case), which is
/// what libtorrent sends for `info_hash` and `peer_id`.
pub fn percent_encode_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// `bytes` percent-encoded.
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    percent_encode_into(bytes, &mut s);
    s
}

/// The raw (still encoded) `key=value` pairs of a query string, in order. Empty pieces
/// (`a=1&&b=2`) are skipped; a piece without `=` has an empty value.
pub fn raw_pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        })
}

/// Decoded `key=value` pairs.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Decoded `key=value` pairs, keys and values both percent-decoded.
pub fn decoded_pairs(query: &[u8]) -> Result<Pairs, QueryError> {
    raw_pairs(query)
        .map(|(k, v)| Ok((percent_decode(k)?, percent_decode(v)?)))
        .collect()
}

/// The first value of `key` as UTF-8 text, if present.
pub fn text_param(pairs: &[(Vec<u8>, Vec<u8>)], key: &str) -> Result<Option<String>, QueryError> {
    match pairs.iter().find(|(k, _)| k == key.as_bytes()) {
        None => Ok(None),
        Some((_, v)) => String::from_utf8(v.clone())
            .map(Some)
            .map_err(|_| QueryError(format!("`{key}` is not UTF-8"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_bytes() {
        let all: Vec<u8> = (0..=255u8).collect();
        let enc = percent_encode(&all);
        assert_eq!(percent_decode(enc.as_bytes()).unwrap(), all);
    }

    #[test]
    fn malformed_escape_is_an_error() {
        assert!(percent_decode(b"%").is_err());
        assert!(percent_decode(b"%4").is_err());
        assert!(percent_decode(b"%zz").is_err());
        assert_eq!(percent_decode(b"a+b%41").unwrap(), b"a bA");
    }

    #[test]
    fn pairs() {
        let p: Vec<_> = raw_pairs(b"a=1&&b&c=x=y").collect();
        assert_eq!(
            p,
            vec![
                (&b"a"[..], &b"1"[..]),
                (&b"b"[..], &b""[..]),
                (&b"c"[..], &b"x=y"[..])
            ]
        );
    }
}
