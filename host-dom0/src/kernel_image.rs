//! Where a guest's kernel, initrd and device tree go in its RAM: the kernel
//! formats QEMU's `-kernel` accepts on `virt`, placed by QEMU's rules, all
//! checked against the VM's RAM before anything is created.
//!
//! - arm64 `Image` ("ARM\x64" at byte 56; Linux `booting.rst`): loaded at
//!   `RAM_BASE + text_offset`, occupying `image_size` bytes (at least the
//!   file); an `image_size` of 0 marks a pre-3.17 kernel, whose
//!   `text_offset` is taken to be 0x80000. Entered at its first byte.
//! - ELF64 little-endian AArch64: each `PT_LOAD` segment at its `p_paddr`,
//!   which must lie wholly in guest RAM; `p_memsz` beyond `p_filesz` is left
//!   as the zeroed RAM `VmCreate` gives (the bss). Entered at `e_entry`,
//!   which must be inside a loaded segment.
//! - anything else: a raw binary at `RAM_BASE + RAW_KERNEL_OFFSET`, entered
//!   at its first byte.
//!
//! The initrd starts at the first 2 MiB boundary after everything the
//! kernel occupies. The device tree (at most 2 MiB, as arm64 Linux
//! requires) goes at the highest 4 KiB-aligned address where it ends below
//! `RAM_BASE + min(memory, 512 MiB)`; if that would overlap the kernel or
//! initrd, at the top of RAM instead; else the VM is refused.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use hv_abi::hypercall::guest::{RAM_BASE, RAW_KERNEL_OFFSET};

/// The arm64 `Image` header (Linux `Documentation/arch/arm64/booting.rst`):
/// byte offsets of the fields read here.
mod image_header {
    /// `text_offset`, little-endian u64.
    pub const TEXT_OFFSET: usize = 8;
    /// `image_size`, little-endian u64.
    pub const IMAGE_SIZE: usize = 16;
    /// `magic`, the four bytes [`MAGIC`].
    pub const MAGIC_OFFSET: usize = 56;
    pub const MAGIC: &[u8; 4] = b"ARM\x64";
}

/// The ELF64 header and program header fields read here (System V ABI,
/// "ELF Header" and "Program Header"): byte offsets and values.
mod elf {
    pub const MAGIC: &[u8; 4] = b"\x7fELF";
    /// `e_ident[EI_CLASS]`: `ELFCLASS64` = 2.
    pub const EI_CLASS: usize = 4;
    pub const ELFCLASS64: u8 = 2;
    /// `e_ident[EI_DATA]`: `ELFDATA2LSB` (little-endian) = 1.
    pub const EI_DATA: usize = 5;
    pub const ELFDATA2LSB: u8 = 1;
    /// `e_machine` (u16): `EM_AARCH64` = 183.
    pub const E_MACHINE: usize = 18;
    pub const EM_AARCH64: u16 = 183;
    /// `e_entry` (u64), `e_phoff` (u64), `e_phentsize` (u16), `e_phnum` (u16).
    pub const E_ENTRY: usize = 24;
    pub const E_PHOFF: usize = 32;
    pub const E_PHENTSIZE: usize = 54;
    pub const E_PHNUM: usize = 56;
    /// Bytes of an ELF64 program header.
    pub const PHDR_SIZE: u16 = 56;
    /// Program header fields: `p_type` (u32), `p_offset`, `p_paddr`,
    /// `p_filesz`, `p_memsz` (u64).
    pub const P_TYPE: usize = 0;
    pub const P_OFFSET: usize = 8;
    pub const P_PADDR: usize = 24;
    pub const P_FILESZ: usize = 32;
    pub const P_MEMSZ: usize = 40;
    /// `p_type` of a loadable segment.
    pub const PT_LOAD: u32 = 1;
}
/// `text_offset` of an `Image` whose header has `image_size` 0.
const OLD_TEXT_OFFSET: u64 = 0x8_0000;
const INITRD_ALIGN: u64 = 2 << 20;
/// Largest device tree arm64 Linux accepts.
pub const MAX_DTB: u64 = 2 << 20;
/// The device tree ends below `RAM_BASE` + this when RAM is larger.
const DTB_LIMIT: u64 = 512 << 20;
const DTB_ALIGN: u64 = 4096;


/// How the kernel file was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Image,
    Elf,
    Raw,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "arm64 Image",
            Self::Elf => "ELF",
            Self::Raw => "raw binary",
        }
    }
}

/// `len` bytes of the file from `offset`, copied to guest address `ipa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub ipa: u64,
    pub offset: usize,
    pub len: usize,
}

/// Where a kernel goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLayout {
    pub format: Format,
    pub segments: Vec<Segment>,
    pub entry: u64,
    /// First guest address after everything the kernel occupies (bss included).
    pub end: u64,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Recognises `image` and places it in `memory` bytes of RAM at `RAM_BASE`.
pub fn layout(image: &[u8], memory: u64) -> Result<KernelLayout, String> {
    let ram_end = RAM_BASE + memory;
    if image.is_empty() {
        return Err(String::from("the kernel file is empty"));
    }
    let magic = image_header::MAGIC_OFFSET..image_header::MAGIC_OFFSET + 4;
    if image.get(magic) == Some(image_header::MAGIC) {
        let text_offset = u64_at(image, image_header::TEXT_OFFSET).unwrap_or(0);
        let image_size = u64_at(image, image_header::IMAGE_SIZE).unwrap_or(0);
        let (text_offset, size) = if image_size == 0 {
            (OLD_TEXT_OFFSET, image.len() as u64)
        } else {
            (text_offset, image_size.max(image.len() as u64))
        };
        let start = RAM_BASE.checked_add(text_offset).filter(|&s| s < ram_end);
        let end = start.and_then(|s| s.checked_add(size)).filter(|&e| e <= ram_end);
        let (Some(start), Some(end)) = (start, end) else {
            return Err(format!(
                "arm64 Image needs {size} bytes at offset {text_offset:#x}: more than the VM's {}",
                mib(memory)
            ));
        };
        let seg = Segment { ipa: start, offset: 0, len: image.len() };
        return Ok(KernelLayout { format: Format::Image, segments: alloc::vec![seg], entry: start, end });
    }
    if image.starts_with(elf::MAGIC) {
        return elf_layout(image, ram_end);
    }
    let start = RAM_BASE + RAW_KERNEL_OFFSET;
    let end = start.checked_add(image.len() as u64).filter(|&e| e <= ram_end).ok_or_else(|| {
        format!("raw kernel of {} bytes does not fit in the VM's {}", image.len(), mib(memory))
    })?;
    let seg = Segment { ipa: start, offset: 0, len: image.len() };
    Ok(KernelLayout { format: Format::Raw, segments: alloc::vec![seg], entry: start, end })
}

fn elf_layout(elf: &[u8], ram_end: u64) -> Result<KernelLayout, String> {
    let bad = |why: &str| format!("ELF: {why}");
    if elf.get(elf::EI_CLASS) != Some(&elf::ELFCLASS64) || elf.get(elf::EI_DATA) != Some(&elf::ELFDATA2LSB) {
        return Err(bad("not a 64-bit little-endian file"));
    }
    if u16_at(elf, elf::E_MACHINE) != Some(elf::EM_AARCH64) {
        return Err(bad("not an AArch64 file"));
    }
    let entry = u64_at(elf, elf::E_ENTRY).ok_or_else(|| bad("truncated header"))?;
    let phoff = u64_at(elf, elf::E_PHOFF).ok_or_else(|| bad("truncated header"))?;
    let phentsize = u16_at(elf, elf::E_PHENTSIZE).ok_or_else(|| bad("truncated header"))?;
    let phnum = u16_at(elf, elf::E_PHNUM).ok_or_else(|| bad("truncated header"))?;
    if phentsize < elf::PHDR_SIZE {
        return Err(bad("program header entries too small"));
    }
    // Guest address ranges of the segments placed so far.
    let mut placed: Vec<core::ops::Range<u64>> = Vec::new();
    let mut copies = Vec::new();
    let mut end = 0u64;
    let mut entry_ok = false;
    for i in 0..u64::from(phnum) {
        let ph = phoff
            .checked_add(i * u64::from(phentsize))
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| bad("program headers outside the file"))?;
        let field = |off: usize| u64_at(elf, ph + off).ok_or_else(|| bad("program headers outside the file"));
        let p_type = u32_at(elf, ph + elf::P_TYPE).ok_or_else(|| bad("program headers outside the file"))?;
        if p_type != elf::PT_LOAD {
            continue;
        }
        let (offset, paddr) = (field(elf::P_OFFSET)?, field(elf::P_PADDR)?);
        let (filesz, memsz) = (field(elf::P_FILESZ)?, field(elf::P_MEMSZ)?);
        if memsz == 0 {
            continue;
        }
        if filesz > memsz {
            return Err(bad(&format!("segment {i}: file size {filesz:#x} exceeds memory size {memsz:#x}")));
        }
        let in_file = offset.checked_add(filesz).is_some_and(|e| e <= elf.len() as u64);
        if !in_file {
            return Err(bad(&format!("segment {i}: data outside the file")));
        }
        let seg_end = paddr.checked_add(memsz);
        if paddr < RAM_BASE || seg_end.is_none_or(|e| e > ram_end) {
            return Err(bad(&format!(
                "segment {i} at {paddr:#x}+{memsz:#x} is outside guest RAM {RAM_BASE:#x}..{ram_end:#x}"
            )));
        }
        let seg_end = seg_end.unwrap_or(ram_end);
        if placed.iter().any(|s| paddr < s.end && s.start < seg_end) {
            return Err(bad(&format!("segment {i} at {paddr:#x} overlaps another")));
        }
        placed.push(paddr..seg_end);
        entry_ok |= (paddr..seg_end).contains(&entry);
        end = end.max(seg_end);
        if filesz > 0 {
            // Bounded by the file's length (checked above), so both fit in usize.
            copies.push(Segment { ipa: paddr, offset: offset as usize, len: filesz as usize });
        }
    }
    if placed.is_empty() {
        return Err(bad("no loadable segment"));
    }
    if !entry_ok {
        return Err(bad(&format!("entry point {entry:#x} is not in a loaded segment")));
    }
    Ok(KernelLayout { format: Format::Elf, segments: copies, entry, end })
}

/// Where the initrd of `len` bytes goes: `(start, end)` guest addresses.
pub fn place_initrd(kernel_end: u64, len: u64, memory: u64) -> Result<(u64, u64), String> {
    let ram_end = RAM_BASE + memory;
    let start = kernel_end.checked_next_multiple_of(INITRD_ALIGN);
    match start.and_then(|s| Some((s, s.checked_add(len)?))) {
        Some((s, e)) if e <= ram_end => Ok((s, e)),
        _ => Err(format!(
            "initrd of {len} bytes does not fit after the kernel (ends at {kernel_end:#x}) in the VM's {}",
            mib(memory)
        )),
    }
}

/// Where a device tree of `len` bytes goes, given that guest addresses
/// `RAM_BASE..used_end` hold the kernel and initrd.
pub fn place_dtb(len: u64, used_end: u64, memory: u64) -> Result<u64, String> {
    if len > MAX_DTB {
        return Err(format!("device tree of {len} bytes is larger than 2 MiB"));
    }
    let ram_end = RAM_BASE + memory;
    let candidates = [RAM_BASE + memory.min(DTB_LIMIT), ram_end];
    for top in candidates {
        if let Some(at) = top.checked_sub(len).map(|a| a & !(DTB_ALIGN - 1)) {
            if at >= used_end && at >= RAM_BASE {
                return Ok(at);
            }
        }
    }
    Err(format!("no room for the device tree ({len} bytes) after the kernel and initrd in the VM's {}", mib(memory)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn arm64_image(len: usize, text_offset: u64, image_size: u64) -> Vec<u8> {
        let mut v = alloc::vec![0u8; len];
        v[8..16].copy_from_slice(&text_offset.to_le_bytes());
        v[16..24].copy_from_slice(&image_size.to_le_bytes());
        v[56..60].copy_from_slice(image_header::MAGIC);
        v
    }

    /// An ELF64 AArch64 file with the given (paddr, filesz, memsz) PT_LOAD segments.
    fn elf(entry: u64, segs: &[(u64, u64, u64)]) -> Vec<u8> {
        let phoff = 64u64;
        let data_at = phoff + 56 * segs.len() as u64;
        let mut v = alloc::vec![0u8; data_at as usize];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[5] = 1;
        v[18..20].copy_from_slice(&elf::EM_AARCH64.to_le_bytes());
        v[24..32].copy_from_slice(&entry.to_le_bytes());
        v[32..40].copy_from_slice(&phoff.to_le_bytes());
        v[54..56].copy_from_slice(&56u16.to_le_bytes());
        v[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        let mut file_off = data_at;
        for (i, &(paddr, filesz, memsz)) in segs.iter().enumerate() {
            let ph = (phoff + 56 * i as u64) as usize;
            v[ph..ph + 4].copy_from_slice(&elf::PT_LOAD.to_le_bytes());
            v[ph + 8..ph + 16].copy_from_slice(&file_off.to_le_bytes());
            v[ph + 16..ph + 24].copy_from_slice(&paddr.to_le_bytes());
            v[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
            v[ph + 32..ph + 40].copy_from_slice(&filesz.to_le_bytes());
            v[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
            file_off += filesz;
        }
        v.resize(file_off as usize, 0xaa);
        v
    }

    #[test]
    fn image_is_placed_at_text_offset_and_spans_image_size() {
        let img = arm64_image(4096, 0x20_0000, 3 * MIB);
        let l = layout(&img, 64 * MIB).unwrap();
        assert_eq!(l.format, Format::Image);
        assert_eq!(l.entry, RAM_BASE + 0x20_0000);
        assert_eq!(l.segments, [Segment { ipa: RAM_BASE + 0x20_0000, offset: 0, len: 4096 }]);
        assert_eq!(l.end, RAM_BASE + 0x20_0000 + 3 * MIB);
    }

    #[test]
    fn image_without_size_uses_the_old_text_offset() {
        let img = arm64_image(8192, 0, 0);
        let l = layout(&img, 2 * MIB).unwrap();
        assert_eq!((l.entry, l.end), (RAM_BASE + 0x8_0000, RAM_BASE + 0x8_0000 + 8192));
    }

    #[test]
    fn image_larger_than_ram_is_refused() {
        assert!(layout(&arm64_image(4096, 0, 4 * MIB), 4 * MIB).is_ok(), "exactly fits");
        let e = layout(&arm64_image(4096, 0x1000, 4 * MIB), 4 * MIB).unwrap_err();
        assert_eq!(e, "arm64 Image needs 4194304 bytes at offset 0x1000: more than the VM's 4 MiB");
        assert!(layout(&arm64_image(64, u64::MAX - 8, 16), 4 * MIB).is_err());
        assert!(layout(&arm64_image(64, 0, u64::MAX), 4 * MIB).is_err());
    }

    #[test]
    fn raw_binary_goes_64k_above_ram_base() {
        let l = layout(b"\x00\x00\x00\x14", 2 * MIB).unwrap();
        assert_eq!(l.format, Format::Raw);
        assert_eq!(l.entry, RAM_BASE + RAW_KERNEL_OFFSET);
        assert_eq!(l.segments, [Segment { ipa: RAM_BASE + 0x1_0000, offset: 0, len: 4 }]);
        assert_eq!(l.end, RAM_BASE + 0x1_0004);
        assert!(layout(&alloc::vec![1u8; 2 * MIB as usize], 2 * MIB).is_err());
        assert!(layout(b"", 2 * MIB).is_err());
    }

    #[test]
    fn elf_segments_go_to_their_physical_addresses() {
        let f = elf(RAM_BASE + 0x8_0000, &[(RAM_BASE + 0x8_0000, 0x100, 0x100), (RAM_BASE + 0x10_0000, 0x20, 0x5000)]);
        let l = layout(&f, 16 * MIB).unwrap();
        assert_eq!(l.format, Format::Elf);
        assert_eq!(l.entry, RAM_BASE + 0x8_0000);
        assert_eq!(l.segments.len(), 2);
        assert_eq!(l.segments[0], Segment { ipa: RAM_BASE + 0x8_0000, offset: 64 + 112, len: 0x100 });
        assert_eq!(l.segments[1], Segment { ipa: RAM_BASE + 0x10_0000, offset: 64 + 112 + 0x100, len: 0x20 });
        assert_eq!(l.end, RAM_BASE + 0x10_5000, "bss counts");
        assert_eq!(&f[l.segments[1].offset..][..0x20], &[0xaa; 0x20]);
    }

    #[test]
    fn elf_segment_outside_ram_is_refused() {
        let below = elf(RAM_BASE, &[(RAM_BASE - 0x1000, 0x10, 0x2000)]);
        assert!(layout(&below, 16 * MIB).unwrap_err().contains("outside guest RAM"));
        let above = elf(RAM_BASE, &[(RAM_BASE, 0x10, 0x10), (RAM_BASE + 16 * MIB - 0x10, 0x10, 0x20)]);
        assert!(layout(&above, 16 * MIB).unwrap_err().contains("segment 1 at 0x40fffff0+0x20 is outside guest RAM"));
        let wrap = elf(RAM_BASE, &[(u64::MAX - 4, 0, 0x10)]);
        assert!(layout(&wrap, 16 * MIB).is_err());
    }

    #[test]
    fn malformed_elf_is_refused_not_panicked_on() {
        let good = elf(RAM_BASE, &[(RAM_BASE, 0x10, 0x10)]);
        for len in 4..good.len() {
            let _ = layout(&good[..len], 16 * MIB);
        }
        let mut bad_entry = good.clone();
        bad_entry[24..32].copy_from_slice(&(RAM_BASE + 0x100).to_le_bytes());
        assert!(layout(&bad_entry, 16 * MIB).unwrap_err().contains("entry point"));
        let mut be = good.clone();
        be[5] = 2;
        assert!(layout(&be, 16 * MIB).unwrap_err().contains("little-endian"));
        let mut x86 = good.clone();
        x86[18] = 62;
        assert!(layout(&x86, 16 * MIB).unwrap_err().contains("AArch64"));
        let overlap = elf(RAM_BASE, &[(RAM_BASE, 0x10, 0x100), (RAM_BASE + 0x80, 0x10, 0x10)]);
        assert!(layout(&overlap, 16 * MIB).unwrap_err().contains("overlaps"));
        let bigger_file = elf(RAM_BASE, &[(RAM_BASE, 0x20, 0x10)]);
        assert!(layout(&bigger_file, 16 * MIB).is_err());
        assert!(layout(&elf(RAM_BASE, &[]), 16 * MIB).unwrap_err().contains("no loadable segment"));
    }

    #[test]
    fn initrd_follows_the_kernel_on_a_2mib_boundary() {
        assert_eq!(place_initrd(RAM_BASE + 0x1_0004, 100, 8 * MIB), Ok((RAM_BASE + 2 * MIB, RAM_BASE + 2 * MIB + 100)));
        assert_eq!(place_initrd(RAM_BASE + 2 * MIB, 10, 8 * MIB), Ok((RAM_BASE + 2 * MIB, RAM_BASE + 2 * MIB + 10)));
        assert!(place_initrd(RAM_BASE + 0x1000, 7 * MIB, 8 * MIB).is_err());
    }

    #[test]
    fn dtb_goes_below_512mib_or_the_top_of_smaller_ram() {
        assert_eq!(place_dtb(0x1234, RAM_BASE + MIB, 1 << 30), Ok(RAM_BASE + (512 << 20) - 0x2000));
        assert_eq!(place_dtb(0x1000, RAM_BASE + MIB, 64 * MIB), Ok(RAM_BASE + 64 * MIB - 0x1000));
        // The initrd reaches past 512 MiB: the tree goes to the top of RAM.
        assert_eq!(place_dtb(0x1000, RAM_BASE + 600 * MIB, 1 << 30), Ok(RAM_BASE + (1 << 30) - 0x1000));
        assert!(place_dtb(0x1000, RAM_BASE + 64 * MIB, 64 * MIB).is_err());
        assert!(place_dtb(3 * MIB, RAM_BASE, 64 * MIB).is_err());
    }
}
