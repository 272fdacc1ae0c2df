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
    /// ranges; up to [`PROBE_LIMIT`] unblocked offsets for cursor-only ranges, each found by jumping over
    /// blocked spans ([`Range::allowed_from`]), so an exclusion of any size costs one step.
    pub fn candidates<'a>(&'a self, range: &'a Range) -> Box<dyn Iterator<Item = u128> + 'a> {
        if self.has_bitmap() {
            Box::new(self.free_bits_from(self.cursor))
        } else {
            let start = self.cursor % self.len.max(1);
            Box::new(range.allowed_from(start).take(PROBE_LIMIT as usize))
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
            return std::fs::write(cursor_path(&self.path), self.cursor.to_string()).map_err(|e| {
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
        if let Ok(s) = std::fs::read_to_string(cursor_path(&self.path)) {
            self.cursor = s.trim().parse().unwrap_or(0);
        }
    }
}

/// The bitmap of blocked offsets, filled a word at a time: the cost is the words a span covers (at most
/// `BITMAP_MAX / 64` in all, spans being disjoint) plus two edge words per span, never one step per bit.
fn blocked_words(range: &Range, nwords: usize) -> Vec<u64> {
    let mut words = vec![0u64; nwords];
    if nwords == 0 {
        return words;
    }
    let edge = |lo_bit: u128, hi_bit: u128| -> u64 {
        // Bits lo_bit..=hi_bit of one word.
        let upper = if hi_bit == 63 {
            u64::MAX
        } else {
            (1u64 << (hi_bit + 1)) - 1
        };
        upper & (u64::MAX << lo_bit)
    };
    for span in &range.blocked {
        let (first, last) = ((span.lo / 64) as usize, (span.hi / 64) as usize);
        if first == last {
            words[first] |= edge(span.lo % 64, span.hi % 64);
            continue;
        }
        words[first] |= edge(span.lo % 64, 63);
        words[first + 1..last].fill(u64::MAX);
        words[last] |= edge(0, span.hi % 64);
    }
    words
}

/// The cursor file of a cursor-only range: the hint's name plus `.cursor` (not `with_extension`, which
/// would cut an IPv4 key at its last dot and let two ranges share a cursor).
fn cursor_path(hint: &Path) -> PathBuf {
    let mut name = hint.as_os_str().to_owned();
    name.push(".cursor");
    PathBuf::from(name)
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

    /// Runs `f` and fails if it took longer than a generous hang guard.
    fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
        let t = std::time::Instant::now();
        let out = f();
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{what} took {:?}",
            t.elapsed()
        );
        out
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("plumb-hint-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn huge_exclusions_are_jumped_not_walked() {
        let dir = tmpdir("huge");
        for (text, ex, first) in [
            ("fd00::/8", vec!["fd00::/9"], "fd80::"),
            (
                "fd00:ad0::/64",
                vec!["fd00:ad0::/65"],
                "fd00:ad0:0:0:8000::",
            ),
            ("::/1", vec!["::/2"], "4000::"),
        ] {
            let r = range(text, &ex);
            let h = Hint::open(&dir, &r, || panic!("no bitmap")).unwrap();
            let got: Vec<u128> = bounded(text, || h.candidates(&r).collect());
            assert_eq!(got.len(), PROBE_LIMIT as usize, "{text}");
            assert_eq!(r.addr(got[0]).to_string(), first, "{text}");
            assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{text}");
        }
        // Everything of a /64 but its last address, as 64 CIDRs halving what is left.
        let mut ex = Vec::new();
        let mut at: u128 = "fd00:1::".parse::<std::net::Ipv6Addr>().unwrap().into();
        for p in 65..=128u32 {
            ex.push(format!("{}/{p}", std::net::Ipv6Addr::from(at)));
            at += 1u128 << (128 - p);
        }
        let ex: Vec<&str> = ex.iter().map(String::as_str).collect();
        let r = range("fd00:1::/64", &ex);
        assert_eq!(r.usable(), 1);
        let mut h = Hint::open(&dir, &r, || panic!("no bitmap")).unwrap();
        let got: Vec<u128> = bounded("one left", || h.candidates(&r).collect());
        assert_eq!(got.len(), 1);
        assert_eq!(r.addr(got[0]).to_string(), "fd00:1::ffff:ffff:ffff:ffff");
        h.advance(got[0]).unwrap(); // the cursor wraps to 0; the search still finds it once
        assert_eq!(
            bounded("wrapped", || h.candidates(&r).collect::<Vec<_>>()),
            got
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn thousands_of_exclusions_and_huge_ipv4() {
        let dir = tmpdir("many");
        let mut ex: Vec<String> = (0..5000u32)
            .map(|i| format!("fd00:2::{:x}", i * 2 + 1))
            .collect();
        ex.extend((0..5000u32).map(|i| format!("fd00:2:0:1::{:x}:0/120", i * 2)));
        let ex: Vec<&str> = ex.iter().map(String::as_str).collect();
        let r = bounded("build", || range("fd00:2::/64", &ex));
        let h = Hint::open(&dir, &r, || panic!("no bitmap")).unwrap();
        let got: Vec<u128> = bounded("search", || h.candidates(&r).collect());
        assert_eq!(got.len(), PROBE_LIMIT as usize);
        assert!(got.iter().all(|o| !r.is_blocked(*o)));
        assert_eq!(r.addr(got[0]).to_string(), "fd00:2::2");
        // A bitmap range with the same exclusions clipped into it.
        let r4 = bounded("v4 /12", || {
            let ex: Vec<String> = (0..5000u32)
                .map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1))
                .collect();
            Range::build("ipam.range", "10.0.0.0/12", None, None, &ex, None).unwrap()
        });
        let h = bounded("v4 bitmap", || {
            Hint::open(&dir, &r4, || Ok(vec![])).unwrap()
        });
        assert!(h.has_bitmap());
        assert_eq!(
            r4.addr(h.candidates(&r4).next().unwrap()).to_string(),
            "10.0.0.251"
        );
        let big = Range::build(
            "ipam.range",
            "0.0.0.0/1",
            Some("0.0.0.1"),
            Some("127.255.255.254"),
            &["0.0.0.0/2".to_string()],
            None,
        )
        .unwrap();
        let h = Hint::open(&dir, &big, || panic!("no bitmap")).unwrap();
        let first = bounded("0.0.0.0/1", || h.candidates(&big).next());
        assert_eq!(big.addr(first.unwrap()).to_string(), "64.0.0.0");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn blocked_words_match_is_blocked() {
        let r = range(
            "10.0.0.0/22",
            &[
                "10.0.0.3",
                "10.0.0.60/30",
                "10.0.1.0/25",
                "10.0.2.63",
                "10.0.3.64/26",
            ],
        );
        let n = (r.last_offset() + 1).div_ceil(64) as usize;
        let w = blocked_words(&r, n);
        for o in 0..=r.last_offset() {
            let bit = w[(o / 64) as usize] >> (o % 64) & 1 == 1;
            assert_eq!(bit, r.is_blocked(o), "offset {o}");
        }
    }
}
