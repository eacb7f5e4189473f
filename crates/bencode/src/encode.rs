//! Writing bencode: a streaming [`Encoder`] and the helpers [`OwnedValue`] shares.

use crate::error::EncodeError;
use crate::owned::OwnedValue;
use crate::value::Value;

/// Number of characters in the decimal form of `i`, sign included.
pub(crate) fn int_len(i: i64) -> usize {
    let mut n = if i < 0 { 2 } else { 1 };
    let mut u = i.unsigned_abs();
    while u >= 10 {
        u /= 10;
        n += 1;
    }
    n
}

/// Appends `i` in decimal (as bencode's integers and lengths, and HTTP's content-length).
pub fn write_decimal(out: &mut Vec<u8>, i: i64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut u = i.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if i < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[at..]);
}

pub(crate) fn write_int(out: &mut Vec<u8>, i: i64) {
    out.push(b'i');
    write_decimal(out, i);
    out.push(b'e');
}

pub(crate) fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_decimal(out, b.len() as i64);
    out.push(b':');
    out.extend_from_slice(b);
}

enum Open {
    List,
    Dict {
        /// The last key written (reused buffer), `None` before the first.
        last_key: Option<Vec<u8>>,
        /// A key was written and its value is due.
        want_value: bool,
    },
}

/// A streaming writer for large outputs (a 100k-entry list without building a tree).
///
/// Calls chain and never fail on the spot; the first misuse (an unsorted or repeated
/// dictionary key, a value where a key is due, unbalanced `end`) is remembered and
/// returned by [`finish`](Encoder::finish), so output that `finish` returns is canonical
/// bencode (apart from what [`raw_value`](Encoder::raw_value) inserts).
///
/// ```
/// let mut e = swarmbak_bencode::Encoder::new();
/// e.begin_dict().key(b"a").int(1).key(b"b").begin_list().str("x").end().end();
/// assert_eq!(e.finish().unwrap(), b"d1:ai1e1:bl1:xee");
/// ```
pub struct Encoder {
    out: Vec<u8>,
    open: Vec<Open>,
    top_level: usize,
    error: Option<EncodeError>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty encoder whose buffer holds `capacity` bytes before growing.
    pub fn with_capacity(capacity: usize) -> Self {
        Encoder {
            out: Vec::with_capacity(capacity),
            open: Vec::new(),
            top_level: 0,
            error: None,
        }
    }

    fn fail(&mut self, e: EncodeError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Bookkeeping before a value is written.
    fn before_value(&mut self) {
        match self.open.last_mut() {
            None => self.top_level += 1,
            Some(Open::List) => {}
            Some(Open::Dict { want_value, .. }) => {
                if *want_value {
                    *want_value = false;
                } else {
                    self.fail(EncodeError::MissingKey);
                }
            }
        }
    }

    /// Writes an integer.
    pub fn int(&mut self, i: i64) -> &mut Self {
        self.before_value();
        write_int(&mut self.out, i);
        self
    }

    /// Writes a byte string.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.before_value();
        write_bytes(&mut self.out, b);
        self
    }

    /// Writes a UTF-8 string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// Opens a list; close it with [`end`](Encoder::end).
    pub fn begin_list(&mut self) -> &mut Self {
        self.before_value();
        self.out.push(b'l');
        self.open.push(Open::List);
        self
    }

    /// Opens a dictionary; write [`key`](Encoder::key)/value pairs with keys in
    /// increasing byte order, then [`end`](Encoder::end).
    pub fn begin_dict(&mut self) -> &mut Self {
        self.before_value();
        self.out.push(b'd');
        self.open.push(Open::Dict {
            last_key: None,
            want_value: false,
        });
        self
    }

    /// Writes a dictionary key; it must sort after the previous key of this dictionary.
    pub fn key(&mut self, key: &[u8]) -> &mut Self {
        let mut err = None;
        match self.open.last_mut() {
            Some(Open::Dict {
                last_key,
                want_value,
            }) if !*want_value => {
                match last_key {
                    Some(prev) if prev.as_slice() >= key => {
                        err = Some(EncodeError::UnsortedKey {
                            key: String::from_utf8_lossy(key).into_owned(),
                            previous: String::from_utf8_lossy(prev).into_owned(),
                        });
                    }
                    Some(prev) => {
                        prev.clear();
                        prev.extend_from_slice(key);
                    }
                    None => *last_key = Some(key.to_vec()),
                }
                *want_value = true;
            }
            _ => err = Some(EncodeError::UnexpectedKey),
        }
        if let Some(e) = err {
            self.fail(e);
        }
        write_bytes(&mut self.out, key);
        self
    }

    /// Closes the innermost open list or dictionary.
    pub fn end(&mut self) -> &mut Self {
        match self.open.pop() {
            None => self.fail(EncodeError::UnbalancedEnd),
            Some(Open::Dict {
                want_value: true, ..
            }) => self.fail(EncodeError::KeyWithoutValue),
            Some(_) => {}
        }
        self.out.push(b'e');
        self
    }

    /// Writes an owned value (canonically).
    pub fn value(&mut self, v: &OwnedValue) -> &mut Self {
        self.before_value();
        self.out.reserve(v.encoded_len());
        v.encode_into(&mut self.out);
        self
    }

    /// Writes a decoded value as it appeared in its input: integers and strings are
    /// re-encoded (the decoder only accepts their canonical form, so the bytes are the
    /// same), lists and dictionaries are copied from their raw span.
    pub fn decoded(&mut self, v: &Value<'_>) -> &mut Self {
        match v {
            Value::Int(i) => self.int(*i),
            Value::Bytes(b) => self.bytes(b),
            Value::List(l) => self.raw_value(l.raw()),
            Value::Dict(d) => self.raw_value(d.raw()),
        }
    }

    /// Writes bytes that already hold exactly one bencoded value, verbatim and unchecked
    /// (for example a torrent's info dictionary, whose bytes fix its info-hash).
    pub fn raw_value(&mut self, encoded: &[u8]) -> &mut Self {
        self.before_value();
        self.out.extend_from_slice(encoded);
        self
    }

    /// The output, or the first misuse.
    pub fn finish(self) -> Result<Vec<u8>, EncodeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if !self.open.is_empty() {
            return Err(EncodeError::Unclosed(self.open.len()));
        }
        if self.top_level != 1 {
            return Err(EncodeError::TopLevelCount(self.top_level));
        }
        Ok(self.out)
    }
}
