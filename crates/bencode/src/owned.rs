//! An owned value that always encodes canonically.

use std::collections::BTreeMap;

use crate::encode::{int_len, write_bytes, write_int};

/// An owned bencode value. Dictionaries are `BTreeMap`s keyed by raw bytes, so
/// [`to_bytes`](OwnedValue::to_bytes) always writes canonical bencode (BEP 3: keys
/// sorted as raw bytes, no duplicates).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnedValue {
    /// An integer.
    Int(i64),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<OwnedValue>),
    /// A dictionary.
    Dict(BTreeMap<Vec<u8>, OwnedValue>),
}

impl OwnedValue {
    /// An integer.
    pub fn int(i: impl Into<i64>) -> Self {
        OwnedValue::Int(i.into())
    }

    /// A byte string.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Self {
        OwnedValue::Bytes(b.into())
    }

    /// A byte string holding UTF-8 text.
    pub fn str(s: &str) -> Self {
        OwnedValue::Bytes(s.as_bytes().to_vec())
    }

    /// A list.
    pub fn list(items: impl IntoIterator<Item = OwnedValue>) -> Self {
        OwnedValue::List(items.into_iter().collect())
    }

    /// A dictionary builder: `OwnedValue::dict().with("a", 1).build()`.
    pub fn dict() -> DictBuilder {
        DictBuilder::default()
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            OwnedValue::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The bytes, if this is a string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            OwnedValue::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<&[OwnedValue]> {
        match self {
            OwnedValue::List(l) => Some(l),
            _ => None,
        }
    }

    /// The dictionary, if this is one.
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, OwnedValue>> {
        match self {
            OwnedValue::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Exact length of the encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            OwnedValue::Int(i) => int_len(*i) + 2,
            OwnedValue::Bytes(b) => bytes_len(b),
            OwnedValue::List(l) => 2 + l.iter().map(OwnedValue::encoded_len).sum::<usize>(),
            OwnedValue::Dict(d) => {
                2 + d
                    .iter()
                    .map(|(k, v)| bytes_len(k) + v.encoded_len())
                    .sum::<usize>()
            }
        }
    }

    /// The canonical encoding, in a buffer allocated once at the right size.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            OwnedValue::Int(i) => write_int(out, *i),
            OwnedValue::Bytes(b) => write_bytes(out, b),
            OwnedValue::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            OwnedValue::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    write_bytes(out, k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }
}

fn bytes_len(b: &[u8]) -> usize {
    int_len(b.len() as i64) + 1 + b.len()
}

impl From<i64> for OwnedValue {
    fn from(i: i64) -> Self {
        OwnedValue::Int(i)
    }
}
impl From<i32> for OwnedValue {
    fn from(i: i32) -> Self {
        OwnedValue::Int(i.into())
    }
}
impl From<u32> for OwnedValue {
    fn from(i: u32) -> Self {
        OwnedValue::Int(i.into())
    }
}
impl From<u16> for OwnedValue {
    fn from(i: u16) -> Self {
        OwnedValue::Int(i.into())
    }
}
impl From<&str> for OwnedValue {
    fn from(s: &str) -> Self {
        OwnedValue::str(s)
    }
}
impl From<String> for OwnedValue {
    fn from(s: String) -> Self {
        OwnedValue::Bytes(s.into_bytes())
    }
}
impl From<&[u8]> for OwnedValue {
    fn from(b: &[u8]) -> Self {
        OwnedValue::Bytes(b.to_vec())
    }
}
impl From<Vec<u8>> for OwnedValue {
    fn from(b: Vec<u8>) -> Self {
        OwnedValue::Bytes(b)
    }
}
impl<const N: usize> From<[u8; N]> for OwnedValue {
    fn from(b: [u8; N]) -> Self {
        OwnedValue::Bytes(b.to_vec())
    }
}
impl From<Vec<OwnedValue>> for OwnedValue {
    fn from(l: Vec<OwnedValue>) -> Self {
        OwnedValue::List(l)
    }
}
impl From<BTreeMap<Vec<u8>, OwnedValue>> for OwnedValue {
    fn from(d: BTreeMap<Vec<u8>, OwnedValue>) -> Self {
        OwnedValue::Dict(d)
    }
}

/// Builds a dictionary; keys are sorted on encoding whatever the order they are added in.
/// A key added twice keeps the last value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DictBuilder {
    map: BTreeMap<Vec<u8>, OwnedValue>,
}

impl DictBuilder {
    /// Adds an entry.
    pub fn with(mut self, key: impl AsRef<[u8]>, value: impl Into<OwnedValue>) -> Self {
        self.map.insert(key.as_ref().to_vec(), value.into());
        self
    }

    /// Adds an entry if `value` is `Some`.
    pub fn with_opt(self, key: impl AsRef<[u8]>, value: Option<impl Into<OwnedValue>>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    /// Adds an entry in place.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl Into<OwnedValue>) {
        self.map.insert(key.as_ref().to_vec(), value.into());
    }

    /// The dictionary.
    pub fn build(self) -> OwnedValue {
        OwnedValue::Dict(self.map)
    }
}
