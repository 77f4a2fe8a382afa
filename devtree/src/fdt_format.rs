//! The flattened device tree format (Devicetree Specification v0.4, chapter
//! 5 "Flattened Devicetree (DTB) Format"): the header, the structure block's
//! tokens and the bounds-checked big-endian reads every tokenizer here needs.
//!
//! One definition for the project's three hand-written tokenizers: the
//! validator in `platform::blob` (which canonicalises a blob before the
//! `fdt` crate sees it), the writer in `writer`, and dom0's allocation-free
//! walk (`host-dom0/src/fdt_scan.rs`). They are hand-written rather than
//! built on the `fdt` crate because `fdt` 0.1.5 panics on malformed blobs
//! (see `platform::blob`), needs an allocation-free caller to trust the blob
//! first, and does not write blobs.

/// `magic`, the first header word.
pub const MAGIC: u32 = 0xd00d_feed;
/// The version this project writes, and the oldest it reads.
pub const VERSION: u32 = 17;
/// `last_comp_version` of a version 17 blob.
pub const LAST_COMP_VERSION: u32 = 16;

/// Structure block tokens (5.4.1), each a big-endian word.
pub mod token {
    /// Starts a node; the NUL-terminated name follows, padded to 4 bytes.
    pub const BEGIN_NODE: u32 = 1;
    pub const END_NODE: u32 = 2;
    /// A property: value length, name offset in the strings block, value
    /// (padded to 4 bytes).
    pub const PROP: u32 = 3;
    /// Ignored by readers.
    pub const NOP: u32 = 4;
    /// Ends the structure block.
    pub const END: u32 = 9;
}

/// The header (5.2): ten big-endian words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub totalsize: u32,
    pub off_dt_struct: u32,
    pub off_dt_strings: u32,
    pub off_mem_rsvmap: u32,
    pub version: u32,
    pub last_comp_version: u32,
    pub boot_cpuid_phys: u32,
    pub size_dt_strings: u32,
    /// Version 17 and later only.
    pub size_dt_struct: u32,
}

impl Header {
    /// Bytes the header takes.
    pub const LEN: usize = 40;
    /// Byte offset of `totalsize`, which readers want before the rest.
    pub const TOTALSIZE_OFFSET: usize = 4;

    /// The header at the start of `blob`, whatever its magic (callers check
    /// [`MAGIC`] first so they can say which of the two is wrong); `None` if
    /// `blob` is shorter than a header.
    pub fn read(blob: &[u8]) -> Option<Header> {
        let w = |i: usize| be32(blob, 4 * i);
        Some(Header {
            totalsize: w(1)?,
            off_dt_struct: w(2)?,
            off_dt_strings: w(3)?,
            off_mem_rsvmap: w(4)?,
            version: w(5)?,
            last_comp_version: w(6)?,
            boot_cpuid_phys: w(7)?,
            size_dt_strings: w(8)?,
            size_dt_struct: w(9)?,
        })
    }

    /// The header's bytes, [`MAGIC`] first.
    pub fn to_bytes(&self) -> [u8; Header::LEN] {
        let words = [
            MAGIC,
            self.totalsize,
            self.off_dt_struct,
            self.off_dt_strings,
            self.off_mem_rsvmap,
            self.version,
            self.last_comp_version,
            self.boot_cpuid_phys,
            self.size_dt_strings,
            self.size_dt_struct,
        ];
        let mut out = [0; Header::LEN];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// The `totalsize` a blob's header claims, if it starts with [`MAGIC`].
pub fn total_size(blob: &[u8]) -> Option<usize> {
    (be32(blob, 0)? == MAGIC).then_some(())?;
    usize::try_from(be32(blob, Header::TOTALSIZE_OFFSET)?).ok()
}

/// Big-endian u32 at `off`, if in bounds.
pub fn be32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Big-endian u64 at `off`, if in bounds.
pub fn be64(b: &[u8], off: usize) -> Option<u64> {
    let bytes = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The NUL-terminated UTF-8 string starting at `off` in `b` (a node name or
/// a strings-block entry), without its NUL.
pub fn cstr(b: &[u8], off: usize) -> Option<&str> {
    let rest = b.get(off..)?;
    let len = rest.iter().position(|&c| c == 0)?;
    core::str::from_utf8(rest.get(..len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_with_the_magic_first() {
        let h = Header {
            totalsize: 0x100,
            off_dt_struct: 0x38,
            off_dt_strings: 0xf0,
            off_mem_rsvmap: 0x28,
            version: VERSION,
            last_comp_version: LAST_COMP_VERSION,
            boot_cpuid_phys: 2,
            size_dt_strings: 0x10,
            size_dt_struct: 0xb8,
        };
        let bytes = h.to_bytes();
        assert_eq!(bytes[..4], [0xd0, 0x0d, 0xfe, 0xed]);
        assert_eq!(bytes[4..8], [0, 0, 1, 0]);
        assert_eq!(Header::read(&bytes), Some(h));
        assert_eq!(total_size(&bytes), Some(0x100));
        assert_eq!(Header::read(&bytes[..39]), None);
    }

    #[test]
    fn reads_refuse_out_of_bounds_and_unterminated_data() {
        assert_eq!(be32(&[1, 2, 3], 0), None);
        assert_eq!(be32(&[0, 0, 0, 9], usize::MAX), None);
        assert_eq!(be64(&[0, 0, 0, 0, 0, 0, 1, 2], 0), Some(0x102));
        assert_eq!(cstr(b"cpu@0\0rest", 0), Some("cpu@0"));
        assert_eq!(cstr(b"no-nul", 0), None);
        assert_eq!(cstr(b"\xff\0", 0), None);
        assert_eq!(total_size(&[0xd0, 0x0d, 0xfe, 0xee, 0, 0, 0, 8]), None);
    }
}
