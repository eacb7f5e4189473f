//! Which pieces a peer has: one bit a piece, high bit of byte 0 = piece 0 (BEP 3).

use std::fmt;

use crate::error::BitfieldError;

/// A set of piece indices below a fixed piece count.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// No piece set, `len` pieces.
    pub fn new(len: u32) -> Self {
        Bitfield {
            bits: vec![0; len.div_ceil(8) as usize],
            len,
            ones: 0,
        }
    }

    /// Every piece set (a BEP 6 `have all`).
    pub fn full(len: u32) -> Self {
        let mut bits = vec![0xff; len.div_ceil(8) as usize];
        if let Some(last) = bits.last_mut() {
            *last &= last_byte_mask(len);
        }
        Bitfield {
            bits,
            len,
            ones: len,
        }
    }

    /// A `bitfield` message's bytes for a torrent of `len` pieces: exactly
    /// `ceil(len / 8)` bytes, and the spare bits of the last byte clear (libtorrent
    /// disconnects a peer that sets them; so does swarmbak).
    pub fn from_bytes(bytes: &[u8], len: u32) -> Result<Self, BitfieldError> {
        let expected = len.div_ceil(8) as usize;
        if bytes.len() != expected {
            return Err(BitfieldError::WrongLength {
                len: bytes.len(),
                expected,
                pieces: len,
            });
        }
        if let Some(last) = bytes.last() {
            if last & !last_byte_mask(len) != 0 {
                return Err(BitfieldError::SpareBitsSet { pieces: len });
            }
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Ok(Bitfield {
            bits: bytes.to_vec(),
            len,
            ones,
        })
    }

    /// The bytes of a `bitfield` message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// The piece count.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// No pieces at all (a zero-piece torrent)?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Is piece `index` set? False past the end.
    pub fn get(&self, index: u32) -> bool {
        if index >= self.len {
            return false;
        }
        self.bits[(index / 8) as usize] & (0x80 >> (index % 8)) != 0
    }

    /// Sets or clears piece `index`; returns its previous value. Past the end this does
    /// nothing and returns false: check the index against [`len`](Self::len) first when
    /// it comes from a peer.
    pub fn set(&mut self, index: u32, value: bool) -> bool {
        if index >= self.len {
            return false;
        }
        let byte = &mut self.bits[(index / 8) as usize];
        let mask = 0x80 >> (index % 8);
        let old = *byte & mask != 0;
        if value && !old {
            *byte |= mask;
            self.ones += 1;
        } else if !value && old {
            *byte &= !mask;
            self.ones -= 1;
        }
        old
    }

    /// Number of pieces set.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Every piece set?
    pub fn has_all(&self) -> bool {
        self.ones == self.len
    }

    /// No piece set?
    pub fn has_none(&self) -> bool {
        self.ones == 0
    }

    /// The set indices, ascending.
    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits
            .iter()
            .enumerate()
            .filter(|(_, &b)| b != 0)
            .flat_map(|(i, &b)| {
                (0..8u32)
                    .filter(move |bit| b & (0x80 >> bit) != 0)
                    .map(move |bit| i as u32 * 8 + bit)
            })
    }

    /// Adds every piece of `other` (the union). Pieces past this field's length are
    /// ignored.
    pub fn merge(&mut self, other: &Bitfield) {
        let n = self.bits.len().min(other.bits.len());
        for i in 0..n {
            self.bits[i] |= other.bits[i];
        }
        if let Some(last) = self.bits.last_mut() {
            *last &= last_byte_mask(self.len);
        }
        self.ones = self.bits.iter().map(|b| b.count_ones()).sum();
    }

    /// Does `self` have a piece that `other` lacks?
    pub fn has_any_missing_from(&self, other: &Bitfield) -> bool {
        self.bits
            .iter()
            .enumerate()
            .any(|(i, &b)| b & !other.bits.get(i).copied().unwrap_or(0) != 0)
    }
}

/// Mask of the bits of the last byte that stand for pieces.
fn last_byte_mask(len: u32) -> u8 {
    match len % 8 {
        0 => 0xff,
        r => 0xffu8 << (8 - r),
    }
}

impl fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitfield({}/{}: ", self.ones, self.len)?;
        for b in &self.bits {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_bitfield() -> impl Strategy<Value = Bitfield> {
        (0u32..200).prop_flat_map(|len| {
            proptest::collection::vec(any::<bool>(), len as usize).prop_map(move |v| {
                let mut b = Bitfield::new(len);
                for (i, on) in v.into_iter().enumerate() {
                    b.set(i as u32, on);
                }
                b
            })
        })
    }

    #[test]
    fn spare_bits_refused() {
        assert_eq!(
            Bitfield::from_bytes(&[0xff, 0x80], 9).map(|b| b.count()),
            Ok(9)
        );
        assert_eq!(
            Bitfield::from_bytes(&[0xff, 0xc0], 9),
            Err(BitfieldError::SpareBitsSet { pieces: 9 })
        );
        assert!(matches!(
            Bitfield::from_bytes(&[0xff], 9),
            Err(BitfieldError::WrongLength { .. })
        ));
        assert!(matches!(
            Bitfield::from_bytes(&[0xff, 0, 0], 9),
            Err(BitfieldError::WrongLength { .. })
        ));
        assert_eq!(Bitfield::from_bytes(&[], 0).map(|b| b.has_all()), Ok(true));
    }

    #[test]
    fn full_and_empty() {
        for len in [0, 1, 7, 8, 9, 16, 17] {
            let f = Bitfield::full(len);
            assert!(f.has_all());
            assert_eq!(f.iter_ones().count() as u32, len);
            assert_eq!(Bitfield::from_bytes(f.as_bytes(), len).as_ref(), Ok(&f));
            assert!(Bitfield::new(len).has_none());
        }
        let mut b = Bitfield::new(3);
        assert!(!b.set(5, true), "past the end is ignored");
        assert!(!b.get(5));
        assert_eq!(b.count(), 0);
    }

    proptest! {
        #[test]
        fn bytes_round_trip(b in arb_bitfield()) {
            let back = Bitfield::from_bytes(b.as_bytes(), b.len()).unwrap();
            prop_assert_eq!(&back, &b);
            prop_assert_eq!(back.count() as usize, b.iter_ones().count());
        }

        #[test]
        fn set_get_count(len in 1u32..300, ops in proptest::collection::vec((any::<u32>(), any::<bool>()), 0..100)) {
            let mut b = Bitfield::new(len);
            let mut model = vec![false; len as usize];
            for (i, v) in ops {
                let i = i % len;
                prop_assert_eq!(b.set(i, v), model[i as usize]);
                model[i as usize] = v;
            }
            for i in 0..len {
                prop_assert_eq!(b.get(i), model[i as usize]);
            }
            prop_assert_eq!(b.count() as usize, model.iter().filter(|x| **x).count());
            let ones: Vec<u32> = b.iter_ones().collect();
            let want: Vec<u32> = (0..len).filter(|i| model[*i as usize]).collect();
            prop_assert_eq!(ones, want);
        }

        #[test]
        fn merge_is_union(a in arb_bitfield(), seed in any::<u64>()) {
            // b: same length as a, bits from the seed
            let mut b = Bitfield::new(a.len());
            for i in 0..a.len() {
                b.set(i, (seed.rotate_left(i % 64) & 1) == 1);
            }
            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b.clone();
            ba.merge(&a);
            prop_assert_eq!(&ab, &ba, "commutative");
            let mut aa = a.clone();
            aa.merge(&a);
            prop_assert_eq!(&aa, &a, "idempotent");
            for i in 0..a.len() {
                prop_assert_eq!(ab.get(i), a.get(i) || b.get(i));
            }
            prop_assert!(!a.has_any_missing_from(&ab));
            prop_assert_eq!(a.has_any_missing_from(&b), a.iter_ones().any(|i| !b.get(i)));
            let mut full = a.clone();
            full.merge(&Bitfield::full(a.len()));
            prop_assert!(full.has_all());
        }
    }
}
