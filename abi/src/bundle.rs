//! The boot bundle: a cpio archive in the "newc" format (the format of
//! Linux initramfs, `cpio -H newc`), given to the hypervisor as its initrd
//! (QEMU `-initrd`; on a Raspberry Pi, `initramfs FILE followkernel` in
//! `config.txt`). The hypervisor takes dom0's kernel from it
//! ([`DOM0_KERNEL`]) and maps the whole bundle read-only into dom0, which
//! reads VM configurations and images from it.
//!
//! Reading never panics and never reads outside the archive: every header
//! field is checked.

/// Path of dom0's kernel (a flat arm64 `Image`) inside the bundle.
pub const DOM0_KERNEL: &str = "dom0.img";

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// One regular file of the bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
    /// Offset of `data` from the start of the archive (files are 4-byte
    /// aligned inside it).
    pub offset: usize,
}

/// Why an archive could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// No "070701" header at this offset.
    BadMagic { offset: usize },
    /// A header field is not 8 hexadecimal digits.
    BadField { offset: usize, field: &'static str },
    /// A header, name or file runs past the end of the archive.
    Truncated { offset: usize },
    /// A name is not UTF-8 or lacks its NUL terminator.
    BadName { offset: usize },
    /// The archive ends without the "TRAILER!!!" entry.
    NoTrailer,
}

impl core::fmt::Display for BundleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic { offset } => write!(f, "bundle: no cpio newc header at offset {offset}"),
            Self::BadField { offset, field } => write!(f, "bundle: header at offset {offset}: bad {field}"),
            Self::Truncated { offset } => write!(f, "bundle: entry at offset {offset} runs past the end"),
            Self::BadName { offset } => write!(f, "bundle: entry at offset {offset}: bad file name"),
            Self::NoTrailer => write!(f, "bundle: no TRAILER!!! entry (truncated archive?)"),
        }
    }
}

/// Iterates over the regular files of a newc archive; directories and other
/// entry types are skipped. Stops at the trailer or at the first error.
pub struct Reader<'a> {
    archive: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Reader<'a> {
    pub fn new(archive: &'a [u8]) -> Self {
        Reader { archive, offset: 0, done: false }
    }

    fn field(&self, header: &[u8], index: usize, name: &'static str) -> Result<usize, BundleError> {
        let digits = header.get(6 + index * 8..6 + index * 8 + 8).ok_or(BundleError::Truncated { offset: self.offset })?;
        let mut value: usize = 0;
        for &d in digits {
            let nibble = (d as char).to_digit(16).ok_or(BundleError::BadField { offset: self.offset, field: name })?;
            value = (value << 4) | nibble as usize;
        }
        Ok(value)
    }

    fn next_entry(&mut self) -> Result<Option<Entry<'a>>, BundleError> {
        loop {
            let start = self.offset;
            let header = self.archive.get(start..start + HEADER_LEN).ok_or(BundleError::NoTrailer)?;
            if &header[..6] != MAGIC {
                return Err(BundleError::BadMagic { offset: start });
            }
            let mode = self.field(header, 1, "c_mode")?;
            let file_size = self.field(header, 6, "c_filesize")?;
            let name_size = self.field(header, 11, "c_namesize")?;
            let truncated = BundleError::Truncated { offset: start };
            let name_start = start + HEADER_LEN;
            let name_end = name_start.checked_add(name_size).ok_or(truncated)?;
            let raw_name = self.archive.get(name_start..name_end).ok_or(truncated)?;
            let name = match raw_name.split_last() {
                Some((0, name)) => core::str::from_utf8(name).map_err(|_| BundleError::BadName { offset: start })?,
                _ => return Err(BundleError::BadName { offset: start }),
            };
            let data_start = align4(name_end).ok_or(truncated)?;
            let data_end = data_start.checked_add(file_size).ok_or(truncated)?;
            let data = self.archive.get(data_start..data_end).ok_or(truncated)?;
            self.offset = align4(data_end).ok_or(truncated)?;
            if name == TRAILER {
                return Ok(None);
            }
            const S_IFMT: usize = 0o170000;
            const S_IFREG: usize = 0o100000;
            if mode & S_IFMT == S_IFREG {
                return Ok(Some(Entry { name: name.trim_start_matches("./"), data, offset: data_start }));
            }
        }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Entry<'a>, BundleError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_entry() {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|n| n & !3)
}

/// Finds the regular file `name`.
pub fn find<'a>(archive: &'a [u8], name: &str) -> Result<Option<Entry<'a>>, BundleError> {
    for entry in Reader::new(archive) {
        let entry = entry?;
        if entry.name == name {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// Writes a newc archive of regular files (host tools and tests).
#[cfg(any(test, feature = "writer"))]
pub fn write(files: &[(&str, &[u8])]) -> alloc::vec::Vec<u8> {
    use alloc::format;
    let mut out = alloc::vec::Vec::new();
    let mut entry = |ino: usize, name: &str, mode: usize, data: &[u8]| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, data)) in files.iter().enumerate() {
        entry(i + 1, name, 0o100644, data);
    }
    entry(0, TRAILER, 0, &[]);
    out
}

#[cfg(any(test, feature = "writer"))]
extern crate alloc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_archive_reads_back_every_file() {
        let archive = write(&[("dom0.img", b"kernel bytes"), ("vms/a.toml", b"name = 'a'\n"), ("empty", b"")]);
        let files: Vec<_> = Reader::new(&archive).map(|e| e.unwrap()).collect();
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].name, "dom0.img");
        assert_eq!(files[0].data, b"kernel bytes");
        assert_eq!(files[0].offset % 4, 0);
        assert_eq!(&archive[files[0].offset..files[0].offset + 12], b"kernel bytes");
        assert_eq!(files[1].data, b"name = 'a'\n");
        assert_eq!(files[2].data, b"");
        assert_eq!(find(&archive, DOM0_KERNEL).unwrap().unwrap().data, b"kernel bytes");
        assert_eq!(find(&archive, "missing").unwrap(), None);
    }

    #[test]
    fn truncated_archives_are_errors_at_every_length() {
        let archive = write(&[("dom0.img", &[7u8; 1000]), ("b", b"xyz")]);
        for len in 0..archive.len() {
            let result: Result<Vec<_>, _> = Reader::new(&archive[..len]).collect();
            assert!(result.is_err(), "length {len} read as complete");
        }
    }

    #[test]
    fn bad_magic_and_bad_fields_are_reported() {
        let mut archive = write(&[("a", b"1")]);
        archive[0] = b'X';
        assert_eq!(find(&archive, "a"), Err(BundleError::BadMagic { offset: 0 }));
        let mut archive = write(&[("a", b"1")]);
        archive[6 + 6 * 8] = b'g'; // c_filesize
        assert_eq!(find(&archive, "a"), Err(BundleError::BadField { offset: 0, field: "c_filesize" }));
    }

    #[test]
    fn huge_sizes_do_not_overflow_or_panic() {
        let mut archive = write(&[("a", b"1")]);
        archive[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"ffffffff");
        assert!(matches!(find(&archive, "a"), Err(BundleError::Truncated { .. })));
        let mut archive = write(&[("a", b"1")]);
        archive[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"ffffffff");
        assert!(matches!(find(&archive, "a"), Err(BundleError::Truncated { .. })));
    }
}
