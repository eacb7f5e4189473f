//! The decoder: iterative (an explicit stack, never recursion), bounded by [`Limits`].

use crate::error::{DecodeError, Reading, ShownByte};
use crate::value::{Dict, List, Value};

/// Bounds on what the decoder accepts from untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Depth at which nesting fails. The outermost list or dictionary is at depth 1, and
    /// a container at depth `max_depth` is an error, so at most `max_depth - 1` containers
    /// nest. This is how libtorrent counts its `depth_limit`: with its default of 100,
    /// libtorrent 2.0.8 accepts 99 nested lists and rejects 100 (checked by hand), and so
    /// does this decoder with the default.
    ///
    /// Decoding itself never recurses, whatever the limit; but dropping, cloning or
    /// comparing a [`Value`] does, so a very large limit moves the risk of a stack
    /// overflow from the decoder to the caller.
    pub max_depth: usize,
    /// Most values and dictionary keys in total (libtorrent's `token_limit` is about the
    /// same bound). Default 2,000,000.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 100,
            max_items: 2_000_000,
        }
    }
}

/// Decodes exactly one value that fills `input`, with the default [`Limits`].
///
/// Rules (lenient where libtorrent and transmission are, strict elsewhere):
/// - dictionary keys may be out of order or repeated (see [`Dict`]); keys must be strings;
/// - integers: `i`, optional `-`, decimal digits, `e`; no leading zeros except `i0e`, no
///   `i-0e`, must fit in `i64`;
/// - strings: decimal length without leading zeros (except `0:`), `:`, that many bytes,
///   which must all be present;
/// - nothing may follow the value ([`decode_prefix`] allows it).
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    decode_with(input, Limits::default())
}

/// [`decode`] with explicit [`Limits`].
pub fn decode_with(input: &[u8], limits: Limits) -> Result<Value<'_>, DecodeError> {
    let (value, used) = decode_prefix_with(input, limits)?;
    if used != input.len() {
        return Err(DecodeError::TrailingData {
            offset: used,
            len: input.len() - used,
        });
    }
    Ok(value)
}

/// Decodes one value at the start of `input` and returns it with the number of bytes it
/// used; whatever follows is left alone.
pub fn decode_prefix(input: &[u8]) -> Result<(Value<'_>, usize), DecodeError> {
    decode_prefix_with(input, Limits::default())
}

enum Frame<'a> {
    List {
        start: usize,
        items: Vec<Value<'a>>,
    },
    Dict {
        start: usize,
        entries: Vec<(&'a [u8], Value<'a>)>,
        key: Option<&'a [u8]>,
    },
}

/// [`decode_prefix`] with explicit [`Limits`].
pub fn decode_prefix_with(input: &[u8], limits: Limits) -> Result<(Value<'_>, usize), DecodeError> {
    let mut pos = 0usize;
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut items = 0usize;
    let mut count = |offset: usize| {
        items += 1;
        if items > limits.max_items {
            Err(DecodeError::ItemLimit {
                offset,
                limit: limits.max_items,
            })
        } else {
            Ok(())
        }
    };

    loop {
        // Inside a dictionary and due a key: read it, or the dictionary's end.
        if let Some(Frame::Dict {
            key: key @ None,
            start,
            ..
        }) = stack.last_mut()
        {
            match input.get(pos) {
                None => {
                    return Err(DecodeError::UnexpectedEof {
                        offset: pos,
                        reading: Reading::Dict { start: *start },
                    })
                }
                Some(b'e') => {} // handled below with the value
                Some(b'0'..=b'9') => {
                    count(pos)?;
                    let (k, next) = read_string(input, pos)?;
                    *key = Some(k);
                    pos = next;
                    continue;
                }
                Some(b'i' | b'l' | b'd') => return Err(DecodeError::NonStringKey { offset: pos }),
                Some(&b) => {
                    return Err(DecodeError::UnexpectedByte {
                        offset: pos,
                        byte: ShownByte(b),
                        expected: "a string key or 'e' in a dictionary",
                    })
                }
            }
        }

        let value = match input.get(pos) {
            None => {
                let reading = match stack.last() {
                    Some(Frame::List { start, .. }) => Reading::List { start: *start },
                    Some(Frame::Dict { start, .. }) => Reading::Dict { start: *start },
                    None => Reading::Value,
                };
                return Err(DecodeError::UnexpectedEof {
                    offset: pos,
                    reading,
                });
            }
            Some(b'i') => {
                count(pos)?;
                let (i, next) = read_int(input, pos)?;
                pos = next;
                Value::Int(i)
            }
            Some(b'0'..=b'9') => {
                count(pos)?;
                let (s, next) = read_string(input, pos)?;
                pos = next;
                Value::Bytes(s)
            }
            Some(&c @ (b'l' | b'd')) => {
                count(pos)?;
                if stack.len() + 1 >= limits.max_depth {
                    return Err(DecodeError::DepthLimit {
                        offset: pos,
                        limit: limits.max_depth,
                    });
                }
                stack.push(if c == b'l' {
                    Frame::List {
                        start: pos,
                        items: Vec::new(),
                    }
                } else {
                    Frame::Dict {
                        start: pos,
                        entries: Vec::new(),
                        key: None,
                    }
                });
                pos += 1;
                continue;
            }
            Some(b'e')
                if matches!(
                    stack.last(),
                    Some(Frame::List { .. } | Frame::Dict { key: None, .. })
                ) =>
            {
                pos += 1;
                match stack.pop() {
                    Some(Frame::List { start, items }) => Value::List(List {
                        items,
                        raw: &input[start..pos],
                    }),
                    Some(Frame::Dict { start, entries, .. }) => Value::Dict(Dict {
                        entries,
                        raw: &input[start..pos],
                    }),
                    None => unreachable_frame(),
                }
            }
            Some(&b) => {
                return Err(DecodeError::UnexpectedByte {
                    offset: pos,
                    byte: ShownByte(b),
                    expected: match stack.last() {
                        None | Some(Frame::Dict { .. }) => "a value ('i', 'l', 'd' or a digit)",
                        Some(Frame::List { .. }) => "a value ('i', 'l', 'd' or a digit) or 'e'",
                    },
                })
            }
        };

        match stack.last_mut() {
            None => return Ok((value, pos)),
            Some(Frame::List { items, .. }) => items.push(value),
            Some(Frame::Dict { entries, key, .. }) => {
                // A value is only read in a dictionary once its key has been read.
                let k = key.take().unwrap_or_default();
                entries.push((k, value));
            }
        }
    }
}

#[cold]
fn unreachable_frame() -> ! {
    unreachable!("'e' is only taken as an end when a list or dictionary is open")
}

/// Reads `i<digits>e` at `start` (which holds the `i`).
fn read_int(input: &[u8], start: usize) -> Result<(i64, usize), DecodeError> {
    let mut pos = start + 1;
    let eof = |pos: usize| DecodeError::UnexpectedEof {
        offset: pos,
        reading: Reading::Int { start },
    };
    let negative = input.get(pos) == Some(&b'-');
    if negative {
        pos += 1;
    }
    let digits_start = pos;
    let mut value: i64 = 0;
    loop {
        match input.get(pos) {
            None => return Err(eof(pos)),
            Some(&d @ b'0'..=b'9') => {
                let d = i64::from(d - b'0');
                // Accumulate negatively so i64::MIN fits.
                value = value
                    .checked_mul(10)
                    .and_then(|v| {
                        if negative {
                            v.checked_sub(d)
                        } else {
                            v.checked_add(d)
                        }
                    })
                    .ok_or(DecodeError::IntOverflow { offset: start })?;
                pos += 1;
            }
            Some(b'e') => break,
            Some(&b) => {
                return Err(DecodeError::UnexpectedByte {
                    offset: pos,
                    byte: ShownByte(b),
                    expected: "a digit or 'e' in an integer",
                })
            }
        }
    }
    let digits = &input[digits_start..pos];
    if digits.is_empty() {
        return Err(DecodeError::EmptyInt { offset: start });
    }
    if digits[0] == b'0' {
        if digits.len() > 1 {
            return Err(DecodeError::IntLeadingZero { offset: start });
        }
        if negative {
            return Err(DecodeError::NegativeZero { offset: start });
        }
    }
    Ok((value, pos + 1))
}

/// Reads `<len>:<bytes>` at `start` (which holds a digit).
fn read_string(input: &[u8], start: usize) -> Result<(&[u8], usize), DecodeError> {
    let mut pos = start;
    let mut len: usize = 0;
    loop {
        match input.get(pos) {
            None => {
                return Err(DecodeError::UnexpectedEof {
                    offset: pos,
                    reading: Reading::StringLength { start },
                })
            }
            Some(&d @ b'0'..=b'9') => {
                len = len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(d - b'0')))
                    .ok_or(DecodeError::StringLengthOverflow { offset: start })?;
                pos += 1;
            }
            Some(b':') => break,
            Some(&b) => {
                return Err(DecodeError::UnexpectedByte {
                    offset: pos,
                    byte: ShownByte(b),
                    expected: "a digit or ':' in a string length",
                })
            }
        }
    }
    if input[start] == b'0' && pos - start > 1 {
        return Err(DecodeError::StringLengthLeadingZero { offset: start });
    }
    let body = pos + 1;
    let remaining = input.len() - body;
    if len > remaining {
        return Err(DecodeError::UnexpectedEof {
            offset: input.len(),
            reading: Reading::String { start, len },
        });
    }
    Ok((&input[body..body + len], body + len))
}
