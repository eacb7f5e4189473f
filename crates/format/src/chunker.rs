//! Content-defined chunking (format v1): a Gear-hash FastCDC with normalised chunking.
//!
//! Parameters are part of the format (protocol-spec/format-v1.md, "Chunking"): a second
//! implementation must cut at the same places so that dedup across versions keeps working.
//!
//! * minimum 256 KiB, average 1 MiB, maximum 4 MiB;
//! * `GEAR[i]` = the first 8 bytes (little-endian) of `BLAKE3("swarmbak gear v1" || [i])`;
//! * rolling hash `h = (h << 1) + GEAR[byte]` (wrapping), started at zero at byte `MIN_SIZE`
//!   of the chunk (the first `MIN_SIZE` bytes are never a cut point);
//! * before `AVG_SIZE` a cut happens after byte `i` when the top 22 bits of `h` are zero,
//!   from `AVG_SIZE` on when the top 18 bits are zero; at `MAX_SIZE` the chunk is cut
//!   regardless.

use std::io::{self, Read};
use std::sync::OnceLock;

/// No chunk (except a file's last) is shorter than this.
pub const MIN_SIZE: usize = 256 << 10;
/// The size chunks tend to.
pub const AVG_SIZE: usize = 1 << 20;
/// No chunk is longer than this.
pub const MAX_SIZE: usize = 4 << 20;

/// Cut mask before `AVG_SIZE`: the top 22 bits of the hash (`0xFFFF_FC00_0000_0000`).
pub const MASK_S: u64 = !(u64::MAX >> 22);
/// Cut mask from `AVG_SIZE` on: the top 18 bits of the hash (`0xFFFF_C000_0000_0000`).
pub const MASK_L: u64 = !(u64::MAX >> 18);

/// The Gear table: `GEAR[i]` = the first 8 bytes (little-endian) of
/// `BLAKE3("swarmbak gear v1" || [i])` (public for the spec's test vectors, §18.1).
pub fn gear() -> &'static [u64; 256] {
    static GEAR: OnceLock<[u64; 256]> = OnceLock::new();
    GEAR.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut h = blake3::Hasher::new();
            h.update(b"swarmbak gear v1");
            h.update(&[i as u8]);
            let d = h.finalize();
            let mut b = [0u8; 8];
            b.copy_from_slice(&d.as_bytes()[..8]);
            *slot = u64::from_le_bytes(b);
        }
        t
    })
}

/// Length of the first chunk of `data`, where `data` holds either at least `MAX_SIZE`
/// bytes or everything up to the end of the file.
pub fn cut(data: &[u8]) -> usize {
    let n = data.len();
    if n <= MIN_SIZE {
        return n;
    }
    let n = n.min(MAX_SIZE);
    let normal = AVG_SIZE.min(n);
    let g = gear();
    let mut h: u64 = 0;
    let mut i = MIN_SIZE;
    while i < normal {
        h = (h << 1).wrapping_add(g[data[i] as usize]);
        if h & MASK_S == 0 {
            return i + 1;
        }
        i += 1;
    }
    while i < n {
        h = (h << 1).wrapping_add(g[data[i] as usize]);
        if h & MASK_L == 0 {
            return i + 1;
        }
        i += 1;
    }
    n
}

/// Splits a whole in-memory buffer into chunk lengths.
pub fn chunk_lengths(mut data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let c = cut(data);
        out.push(c);
        data = &data[c..];
    }
    out
}

/// Streams chunks out of a reader with a bounded buffer.
pub struct Chunker<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

const BUF_SIZE: usize = 4 * MAX_SIZE;

impl<R: Read> Chunker<R> {
    pub fn new(reader: R) -> Self {
        Self::with_size_hint(reader, BUF_SIZE as u64)
    }

    /// A chunker whose buffer starts at about `size` bytes (the file's size from stat), so
    /// that small files do not pay for a large buffer; it grows if the file is longer.
    pub fn with_size_hint(reader: R, size: u64) -> Self {
        let cap = (size.saturating_add(1)).min(BUF_SIZE as u64) as usize;
        Chunker {
            reader,
            buf: vec![0u8; cap.max(4096)],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        if self.end - self.start < MAX_SIZE && !self.eof {
            self.fill()?;
        }
        if self.start == self.end {
            return Ok(None);
        }
        let c = cut(&self.buf[self.start..self.end]);
        let s = self.start;
        self.start += c;
        Ok(Some(&self.buf[s..s + c]))
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            if self.end == self.buf.len() {
                if self.buf.len() >= BUF_SIZE {
                    break;
                }
                // The file is longer than its size hint: grow to the full buffer.
                self.buf.resize(BUF_SIZE, 0);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn bounds_hold() {
        let d = pseudo(40 << 20, 1);
        let lens = chunk_lengths(&d);
        assert_eq!(lens.iter().sum::<usize>(), d.len());
        for l in &lens[..lens.len() - 1] {
            assert!(*l >= MIN_SIZE && *l <= MAX_SIZE, "{l}");
        }
        let avg = d.len() / lens.len();
        assert!(avg > 600 << 10 && avg < 2 << 20, "average {avg}");
    }

    #[test]
    fn streaming_matches_in_memory() {
        let d = pseudo(23 << 20, 2);
        let mut c = Chunker::new(&d[..]);
        let mut lens = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            lens.push(ch.len());
        }
        assert_eq!(lens, chunk_lengths(&d));
    }

    #[test]
    fn zeros_cut_at_max() {
        let d = vec![0u8; 9 << 20];
        let lens = chunk_lengths(&d);
        assert_eq!(lens, vec![MAX_SIZE, MAX_SIZE, 1 << 20]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        /// An insertion moves only the boundaries near it: the chunks before and
        /// (after resynchronising) after it stay the same.
        #[test]
        fn boundaries_stay_put_around_an_insertion(seed in 0u64..1000, at_frac in 0.0f64..1.0, ins in 1usize..5000) {
            let d = pseudo(24 << 20, seed);
            let at = (d.len() as f64 * at_frac) as usize;
            let mut e = d.clone();
            e.splice(at..at, pseudo(ins, seed + 7));
            let bd: Vec<usize> = chunk_lengths(&d).iter().scan(0, |s, l| { *s += l; Some(*s) }).collect();
            let be: Vec<usize> = chunk_lengths(&e).iter().scan(0, |s, l| { *s += l; Some(*s) }).collect();
            // Boundaries before the insertion point are unchanged.
            let before_d: Vec<_> = bd.iter().copied().filter(|b| *b <= at).collect();
            let before_e: Vec<_> = be.iter().copied().filter(|b| *b <= at).collect();
            proptest::prop_assert_eq!(&before_d, &before_e);
            // Boundaries well after it come back, shifted by the insertion.
            let late_d: std::collections::BTreeSet<_> = bd.iter().copied().filter(|b| *b > at + 2 * MAX_SIZE).map(|b| b + ins).collect();
            let late_e: std::collections::BTreeSet<_> = be.iter().copied().filter(|b| *b > at + ins + 2 * MAX_SIZE).collect();
            proptest::prop_assert_eq!(late_d, late_e);
        }
    }
}
