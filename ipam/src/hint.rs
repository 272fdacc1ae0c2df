//! Free-address hints, one file per range, so that finding a free address costs the same at 0 % and at
//! 99 % occupancy. The `ip-` files stay the truth; a hint is only ever a fast guess that the allocator
//! verifies with one `lstat` and repairs when stale (a crash can leave a bit set or clear).
//!
//! Ranges of up to 2^20 addresses keep a bitmap: a 24-byte header (magic, next-fit cursor, size) then
//! one bit per offset. The search scans 64 offsets per step from the cursor, skipping blocked ones, and
//! only rewrites the 8 bytes it changes. Larger (IPv6) ranges keep only a cursor and probe from it.

use crate::range::Range;
use plumb_cni::{CniError, CniResult};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Ranges with more offsets than this use a cursor instead of a bitmap.
pub const BITMAP_MAX: u128 = 1 << 20;

/// How many candidates a cursor-only search probes before it gives up.
pub const PROBE_LIMIT: u32 = 4096;

const MAGIC: &[u8; 8] = b"PLUMBMAP";
const HEADER: u64 = 24;

/// A range's hint file, read into memory.
#[derive(Debug)]
pub struct Hint {
    file: File,
    path: PathBuf,
    /// Number of offsets in the range.
    len: u128,
    cursor: u128,
    /// Used bits (empty for cursor-only ranges).
    words: Vec<u64>,
    /// Blocked bits from the config (excluded, gateway), same layout as `words`.
    blocked: Vec<u64>,
}

impl Hint {
    /// Opens the hint of `range` in `dir`. When missing or of another size, `rebuild` lists the
    /// currently claimed offsets and the bitmap is written from them.
    pub fn open(
        dir: &Path,
        range: &Range,
        rebuild: impl FnOnce() -> CniResult<Vec<u128>>,
    ) -> CniResult<Hint> {
        let path = dir.join(format!("hint-{}", range.key()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CniError::io(format!("cannot open {}", path.display()), &e))?;
        let len = range.last_offset().saturating_add(1);
        let bitmap = len <= BITMAP_MAX;
        let nwords = if bitmap { len.div_ceil(64) as usize } else { 0 };
        let mut hint = Hint {
            file,
            path,
            len,
            cursor: 0,
            words: vec![0; nwords],
            blocked: blocked_words(range, nwords),
        };
        if !hint.load()? {
            hint.words.fill(0);
            if bitmap {
                for off in rebuild()? {
                    hint.set_bit(off, true);
                }
            }
            hint.store_all()?;
        }
        if !bitmap {
            hint.load_cursor();
        }
        Ok(hint)
    }

    /// Reads the file; false when it is missing, short or of another range size.
    fn load(&mut self) -> CniResult<bool> {
        let want = HEADER as usize + self.words.len() * 8;
        let mut buf = vec![0u8; want];
        let n = read_full(&self.file, &mut buf)
            .map_err(|e| CniError::io(format!("cannot read {}", self.path.display()), &e))?;
        if n != want
            || &buf[..8] != MAGIC
            || u64_at(&buf, 16) as u128 != self.len.min(u64::MAX as u128)
        {
            return Ok(false);
        }
        self.cursor = u64_at(&buf, 8) as u128;
        for (i, w) in self.words.iter_mut().enumerate() {
            *w = u64_at(&buf, HEADER as usize + i * 8);
        }
        Ok(true)
    }

    fn store_all(&self) -> CniResult<()> {
        let mut buf = Vec::with_capacity(HEADER as usize + self.words.len() * 8);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(self.cursor as u64).to_le_bytes());
        buf.extend_from_slice(&(self.len.min(u64::MAX as u128) as u64).to_le_bytes());
        for w in &self.words {
            buf.extend_from_slice(&w.to_le_bytes());
        }
        self.file
            .set_len(buf.len() as u64)
            .and_then(|_| self.file.write_all_at(&buf, 0))
            .map_err(|e| CniError::io(format!("cannot write {}", self.path.display()), &e))
    }

    /// Whether this range keeps a bitmap (else only a cursor).
    pub fn has_bitmap(&self) -> bool {
        !self.words.is_empty()
    }

    /// Candidate offsets in next-fit order from the cursor: every free, unblocked bit once for bitmap
    /// ranges; up to [`PROBE_LIMIT`] unblocked offsets for cursor-only ranges.
    pub fn candidates<'a>(&'a self, range: &'a Range) -> Box<dyn Iterator<Item = u128> + 'a> {
        if self.has_bitmap() {
            Box::new(self.free_bits_from(self.cursor))
        } else {
            let len = self.len;
            let start = self.cursor % len.max(1);
            Box::new(
                (0..len)
                    .map(move |i| {
                        if i < len - start {
                            start + i
                        } else {
                            i - (len - start)
                        }
                    })
                    .filter(move |o| !range.is_blocked(*o))
                    .take(PROBE_LIMIT as usize),
            )
        }
    }

    fn free_bits_from(&self, cursor: u128) -> impl Iterator<Item = u128> + '_ {
        let n = self.words.len();
        let first = (cursor / 64) as usize % n.max(1);
        (0..=n).flat_map(move |step| {
            let wi = (first + step) % n;
            let mut free = !(self.words[wi] | self.blocked[wi]);
            // The first word is visited twice: bits at or after the cursor first, the rest at the end.
            let lo_bit = (cursor % 64) as u32;
            if step == 0 {
                free &= u64::MAX << lo_bit;
            } else if step == n {
                free &= !(u64::MAX << lo_bit);
            }
            let len = self.len;
            std::iter::from_fn(move || {
                if free == 0 {
                    return None;
                }
                let b = free.trailing_zeros();
                free &= free - 1;
                Some(wi as u128 * 64 + b as u128)
            })
            .filter(move |o| *o < len)
        })
    }

    /// Marks an offset used or free and persists that word.
    pub fn mark(&mut self, offset: u128, used: bool) -> CniResult<()> {
        if !self.has_bitmap() || offset >= self.len {
            return Ok(());
        }
        self.set_bit(offset, used);
        let wi = (offset / 64) as usize;
        self.file
            .write_all_at(&self.words[wi].to_le_bytes(), HEADER + wi as u64 * 8)
            .map_err(|e| CniError::io(format!("cannot write {}", self.path.display()), &e))
    }

    /// Moves the next-fit cursor past an allocated offset and persists it.
    pub fn advance(&mut self, offset: u128) -> CniResult<()> {
        self.cursor = (offset + 1) % self.len.max(1);
        let bytes = if self.has_bitmap() {
            (self.cursor as u64).to_le_bytes().to_vec()
        } else {
            Vec::new()
        };
        if bytes.is_empty() {
            // Cursor-only ranges may exceed 64 bits: keep the cursor as text beside the file.
            return std::fs::write(self.path.with_extension("cursor"), self.cursor.to_string())
                .map_err(|e| {
                    CniError::io(
                        format!("cannot write cursor of {}", self.path.display()),
                        &e,
                    )
                });
        }
        self.file
            .write_all_at(&bytes, 8)
            .map_err(|e| CniError::io(format!("cannot write {}", self.path.display()), &e))
    }

    /// Replaces the bitmap with the given used offsets (after GC or when the hint proved stale).
    pub fn rebuild(&mut self, used: &[u128]) -> CniResult<()> {
        self.words.fill(0);
        for off in used {
            self.set_bit(*off, true);
        }
        self.store_all()
    }

    /// Number of used bits (bitmap ranges only).
    pub fn used(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }

    fn set_bit(&mut self, offset: u128, used: bool) {
        if offset >= self.len || self.words.is_empty() {
            return;
        }
        let (wi, bit) = ((offset / 64) as usize, offset % 64);
        if used {
            self.words[wi] |= 1 << bit;
        } else {
            self.words[wi] &= !(1 << bit);
        }
    }

    fn load_cursor(&mut self) {
        if self.has_bitmap() {
            return;
        }
        if let Ok(s) = std::fs::read_to_string(self.path.with_extension("cursor")) {
            self.cursor = s.trim().parse().unwrap_or(0);
        }
    }
}

fn blocked_words(range: &Range, nwords: usize) -> Vec<u64> {
    let mut words = vec![0u64; nwords];
    if nwords == 0 {
        return words;
    }
    for span in &range.blocked {
        let mut o = span.lo;
        while o <= span.hi {
            let wi = (o / 64) as usize;
            let bit = o % 64;
            if bit == 0 && span.hi - o >= 63 {
                words[wi] = u64::MAX;
                o += 64;
            } else {
                words[wi] |= 1 << bit;
                o += 1;
            }
        }
    }
    words
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn read_full(f: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str, exclude: &[&str]) -> Range {
        let ex: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        Range::build("ipam.range", text, None, None, &ex, None).unwrap()
    }

    #[test]
    fn next_fit_skips_used_and_blocked_and_wraps() {
        let dir = std::env::temp_dir().join(format!("plumb-hint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = range("10.0.0.0/24", &["10.0.0.1/32", "10.0.0.64/26"]);
        let mut h = Hint::open(&dir, &r, || Ok(vec![1, 2])).unwrap();
        assert_eq!(h.candidates(&r).next(), Some(3)); // 0 blocked, 1-2 used
        h.mark(3, true).unwrap();
        h.advance(3).unwrap();
        assert_eq!(h.candidates(&r).next(), Some(4));
        h.advance(60).unwrap();
        let c: Vec<u128> = h.candidates(&r).take(3).collect();
        assert_eq!(c, vec![61, 62, 127]); // 63..=126 blocked (10.0.0.64/26 is offsets 63..126)
        let all: Vec<u128> = h.candidates(&r).collect();
        assert_eq!(all.len() as u128, r.usable() - 3);
        assert_eq!(*all.last().unwrap(), 60); // wrapped round to the cursor
        drop(h);
        let h = Hint::open(&dir, &r, || panic!("must load, not rebuild")).unwrap();
        assert_eq!(h.used(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn huge_ranges_probe_from_the_cursor() {
        let dir = std::env::temp_dir().join(format!("plumb-hint6-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = range("fd00::/56", &[]);
        let mut h = Hint::open(&dir, &r, || panic!("no bitmap for /56")).unwrap();
        assert!(!h.has_bitmap());
        h.advance(u64::MAX as u128 + 5).unwrap();
        let h = Hint::open(&dir, &r, || panic!("no bitmap for /56")).unwrap();
        assert_eq!(h.candidates(&r).next(), Some(u64::MAX as u128 + 6));
        assert_eq!(h.candidates(&r).count(), PROBE_LIMIT as usize);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
