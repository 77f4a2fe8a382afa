//! The MMIO test device dom0 serves to every guest through IO forwarding
//! (`ioreq`): 32 read/write 64-bit registers at offsets 0x00..0x100
//! (stride 8) that hold what is written, and one read-only register at
//! 0x100 with a fixed value (for read benchmarks).
//!
//! The register file is one little-endian byte array: a write of size `s`
//! at offset `o` replaces bytes `o..o + s`, a read returns those bytes
//! zero-extended. Accesses must be naturally aligned (1, 2, 4 or 8 bytes)
//! and lie inside 0x00..0x108; anything else is an [`IoDevError`], which
//! the forwarding code turns into a fault (the guest takes an abort).
//!
//! `backend::Backends` routes requests to one device per VM.


/// Guest-physical base of the device in every guest (the `IoMap` window).
pub const BASE: u64 = 0x0B00_0000;
/// The window registered with `IoMap` (one page).
pub const WINDOW: u64 = 0x1000;
/// Number of read/write registers.
pub const REGS: usize = 32;
/// Offset of the read-only identification register.
pub const ID_OFFSET: u64 = (REGS * 8) as u64;
/// Its value.
pub const ID_VALUE: u64 = 0x1234_5678_9abc_def0;
/// End of the decoded registers (exclusive).
pub const END: u64 = ID_OFFSET + 8;

/// Why an access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDevError {
    /// The size is not 1, 2, 4 or 8.
    Size(u8),
    /// The offset is not a multiple of the size.
    Unaligned { offset: u64, size: u8 },
    /// The access is not inside 0x00..0x108.
    OutOfRange { offset: u64 },
    /// A write to the read-only register.
    ReadOnly { offset: u64 },
}

/// One instance of the test device (dom0 keeps one per guest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestDevice {
    regs: [u8; REGS * 8],
}

impl Default for TestDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDevice {
    pub const fn new() -> Self {
        TestDevice { regs: [0; REGS * 8] }
    }

    /// Checks size, alignment and range; returns the byte range.
    fn check(offset: u64, size: u8) -> Result<(usize, usize), IoDevError> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(IoDevError::Size(size));
        }
        if offset >= END || END - offset < u64::from(size) {
            return Err(IoDevError::OutOfRange { offset });
        }
        if !offset.is_multiple_of(u64::from(size)) {
            return Err(IoDevError::Unaligned { offset, size });
        }
        Ok((offset as usize, offset as usize + size as usize))
    }

    /// A guest load of `size` bytes at `offset` into the device.
    pub fn read(&self, offset: u64, size: u8) -> Result<u64, IoDevError> {
        let (start, end) = Self::check(offset, size)?;
        let mut bytes = [0u8; 8];
        if offset >= ID_OFFSET {
            let id = ID_VALUE.to_le_bytes();
            let at = (offset - ID_OFFSET) as usize;
            bytes[..end - start].copy_from_slice(&id[at..at + (end - start)]);
        } else {
            bytes[..end - start].copy_from_slice(&self.regs[start..end]);
        }
        Ok(u64::from_le_bytes(bytes))
    }

    /// A guest store of the low `size` bytes of `data` at `offset`.
    pub fn write(&mut self, offset: u64, size: u8, data: u64) -> Result<(), IoDevError> {
        let (start, end) = Self::check(offset, size)?;
        if offset >= ID_OFFSET {
            return Err(IoDevError::ReadOnly { offset });
        }
        self.regs[start..end].copy_from_slice(&data.to_le_bytes()[..end - start]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [u8; 4] = [1, 2, 4, 8];

    fn mask(size: u8) -> u64 {
        if size == 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 }
    }

    #[test]
    fn starts_zeroed_and_id_register_reads_its_value() {
        let d = TestDevice::new();
        for off in (0..ID_OFFSET).step_by(8) {
            assert_eq!(d.read(off, 8), Ok(0));
        }
        assert_eq!(d.read(ID_OFFSET, 8), Ok(ID_VALUE));
        assert_eq!(d.read(ID_OFFSET, 4), Ok(0x9abc_def0));
        assert_eq!(d.read(ID_OFFSET + 4, 4), Ok(0x1234_5678));
        assert_eq!(d.read(ID_OFFSET + 2, 2), Ok(0x9abc));
        assert_eq!(d.read(ID_OFFSET + 7, 1), Ok(0x12));
    }

    #[test]
    fn every_size_at_every_aligned_offset_round_trips() {
        for size in SIZES {
            for off in (0..ID_OFFSET).step_by(size as usize) {
                let mut d = TestDevice::new();
                let value = 0x8877_6655_4433_2211u64.wrapping_mul(off + 1) & mask(size);
                d.write(off, size, value).unwrap();
                assert_eq!(d.read(off, size), Ok(value), "size {size} offset {off:#x}");
                // Only bytes off..off+size changed.
                let reg = off & !7;
                let shift = (off - reg) * 8;
                assert_eq!(d.read(reg, 8), Ok(value << shift), "size {size} offset {off:#x}");
                for other in (0..ID_OFFSET).step_by(8).filter(|&o| o != reg) {
                    assert_eq!(d.read(other, 8), Ok(0));
                }
            }
        }
    }

    #[test]
    fn narrow_writes_update_only_their_bytes_little_endian() {
        let mut d = TestDevice::new();
        d.write(0x10, 8, 0x1122_3344_5566_7788).unwrap();
        d.write(0x11, 1, 0xAA).unwrap();
        assert_eq!(d.read(0x10, 8), Ok(0x1122_3344_5566_AA88));
        d.write(0x14, 2, 0xBBCC).unwrap();
        assert_eq!(d.read(0x10, 8), Ok(0x1122_BBCC_5566_AA88));
        d.write(0x14, 4, 0xDEAD_BEEF).unwrap();
        assert_eq!(d.read(0x10, 8), Ok(0xDEAD_BEEF_5566_AA88));
        assert_eq!(d.read(0x10, 4), Ok(0x5566_AA88));
        assert_eq!(d.read(0x16, 2), Ok(0xDEAD));
        assert_eq!(d.read(0x17, 1), Ok(0xDE));
        // Last register, last byte.
        d.write(0xFF, 1, 0x5A).unwrap();
        assert_eq!(d.read(0xF8, 8), Ok(0x5A00_0000_0000_0000));
    }

    #[test]
    fn reads_zero_extend() {
        let mut d = TestDevice::new();
        d.write(0x20, 8, u64::MAX).unwrap();
        assert_eq!(d.read(0x20, 1), Ok(0xFF));
        assert_eq!(d.read(0x20, 2), Ok(0xFFFF));
        assert_eq!(d.read(0x20, 4), Ok(0xFFFF_FFFF));
        assert_eq!(d.read(0x20, 8), Ok(u64::MAX));
    }

    #[test]
    fn misaligned_accesses_are_refused_for_every_size() {
        let mut d = TestDevice::new();
        for size in SIZES.into_iter().filter(|&s| s > 1) {
            for misalign in 1..u64::from(size) {
                let off = 0x40 + misalign;
                let e = IoDevError::Unaligned { offset: off, size };
                assert_eq!(d.read(off, size), Err(e));
                assert_eq!(d.write(off, size, 0), Err(e));
                let id_off = ID_OFFSET + misalign;
                if id_off + u64::from(size) <= END {
                    assert_eq!(d.read(id_off, size), Err(IoDevError::Unaligned { offset: id_off, size }));
                }
            }
        }
        assert_eq!(d, TestDevice::new(), "nothing written");
    }

    #[test]
    fn bad_sizes_are_refused() {
        let mut d = TestDevice::new();
        for size in [0u8, 3, 5, 6, 7, 9, 16] {
            assert_eq!(d.read(0, size), Err(IoDevError::Size(size)));
            assert_eq!(d.write(0, size, 0), Err(IoDevError::Size(size)));
        }
    }

    #[test]
    fn out_of_range_accesses_are_refused() {
        let mut d = TestDevice::new();
        for size in SIZES {
            for off in [END, END + u64::from(size), 0x200, 0xFF8, u64::MAX - 7, u64::MAX - 15] {
                let off = off & !(u64::from(size) - 1);
                assert_eq!(d.read(off, size), Err(IoDevError::OutOfRange { offset: off }), "{off:#x}/{size}");
                assert_eq!(d.write(off, size, 0), Err(IoDevError::OutOfRange { offset: off }));
            }
            // The last byte in range is fine.
            let last = END - u64::from(size);
            assert!(d.read(last, size).is_ok());
        }
    }

    #[test]
    fn id_register_is_read_only_at_every_size() {
        let mut d = TestDevice::new();
        for size in SIZES {
            for off in (ID_OFFSET..END).step_by(size as usize) {
                assert_eq!(d.write(off, size, 0), Err(IoDevError::ReadOnly { offset: off }));
            }
        }
        assert_eq!(d.read(ID_OFFSET, 8), Ok(ID_VALUE));
    }

    #[test]
    fn write_uses_only_the_low_size_bytes() {
        let mut d = TestDevice::new();
        d.write(0x30, 2, 0xFFFF_FFFF_FFFF_1234).unwrap();
        assert_eq!(d.read(0x30, 8), Ok(0x1234));
    }
}
