//! The borrowed value produced by the decoder.

use std::fmt;

use crate::owned::OwnedValue;

/// A decoded value, borrowing from the input.
///
/// Lists and dictionaries remember the exact bytes they were decoded from
/// ([`List::raw`], [`Dict::raw`]), so a torrent's info-hash can be computed over the info
/// dictionary as it appears, never over a re-encoding. Integers and strings need no
/// span: the decoder only accepts their canonical form, so re-encoding them gives back
/// the same bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// `i42e`
    Int(i64),
    /// `4:spam` (any bytes, not necessarily UTF-8)
    Bytes(&'a [u8]),
    /// `l...e`
    List(List<'a>),
    /// `d...e`
    Dict(Dict<'a>),
}

impl<'a> Value<'a> {
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The bytes, if this is a string.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The string, if this is a string holding valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<&List<'a>> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The dictionary, if this is one.
    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The exact input bytes of a list or dictionary; `None` for integers and strings
    /// (whose bytes are their canonical encoding, see [`Value`]).
    pub fn raw(&self) -> Option<&'a [u8]> {
        match self {
            Value::List(l) => Some(l.raw),
            Value::Dict(d) => Some(d.raw),
            _ => None,
        }
    }

    /// "integer", "string", "list" or "dictionary", for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Bytes(_) => "string",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }

    /// An owned copy. Dictionaries become sorted maps; where a key appears twice, the
    /// first entry is kept (the one [`Dict::get`] returns).
    pub fn to_owned_value(&self) -> OwnedValue {
        match self {
            Value::Int(i) => OwnedValue::Int(*i),
            Value::Bytes(b) => OwnedValue::Bytes(b.to_vec()),
            Value::List(l) => OwnedValue::List(l.iter().map(Value::to_owned_value).collect()),
            Value::Dict(d) => {
                let mut map = std::collections::BTreeMap::new();
                for (k, v) in d.iter() {
                    map.entry(k.to_vec()).or_insert_with(|| v.to_owned_value());
                }
                OwnedValue::Dict(map)
            }
        }
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "{}", ShowBytes(b)),
            Value::List(l) => f.debug_list().entries(l.iter()).finish(),
            Value::Dict(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (ShowBytes(k), v)))
                .finish(),
        }
    }
}

/// Bytes shown as a string literal when they are UTF-8, else as hex.
struct ShowBytes<'b>(&'b [u8]);

impl fmt::Debug for ShowBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ShowBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => {
                write!(f, "0x")?;
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// A decoded list and the bytes it was decoded from.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct List<'a> {
    pub(crate) items: Vec<Value<'a>>,
    pub(crate) raw: &'a [u8],
}

impl<'a> List<'a> {
    /// The items, in order.
    pub fn items(&self) -> &[Value<'a>] {
        &self.items
    }

    /// The items, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Value<'a>> {
        self.items.iter()
    }

    /// The item at `index`.
    pub fn get(&self, index: usize) -> Option<&Value<'a>> {
        self.items.get(index)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// No items?
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The exact input bytes, `l` to `e`.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

impl<'a, 'l> IntoIterator for &'l List<'a> {
    type Item = &'l Value<'a>;
    type IntoIter = std::slice::Iter<'l, Value<'a>>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// A decoded dictionary: its entries in input order, and the bytes it was decoded from.
///
/// Like libtorrent and transmission, the decoder accepts keys out of order and repeated
/// keys. Every entry is kept, in the order it appears; [`Dict::get`] returns the **first**
/// entry with the key, as libtorrent's `dict_find` does (checked against libtorrent 2.0.8:
/// a torrent with `length` twice uses the first).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Dict<'a> {
    pub(crate) entries: Vec<(&'a [u8], Value<'a>)>,
    pub(crate) raw: &'a [u8],
}

impl<'a> Dict<'a> {
    /// The value of the first entry with this key.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Is there an entry with this key?
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Every entry, in input order (duplicates included).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a [u8], &Value<'a>)> + '_ {
        self.entries.iter().map(|(k, v)| (*k, v))
    }

    /// Number of entries, duplicates included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Are the keys strictly increasing as raw bytes (sorted, no duplicates), as BEP 3
    /// requires of an encoder? Only this dictionary is checked, not nested ones.
    pub fn is_sorted(&self) -> bool {
        self.entries.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// The exact input bytes, `d` to `e`.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}
