//! Guest physical memory as a device sees it: the only way the virtio code
//! touches a guest's RAM.
//!
//! Everything a device reads from guest memory is copied out once and
//! validated on the copy; a guest that changes its memory concurrently can
//! make its own requests fail or carry wrong data, never break the device.

use alloc::vec;
use alloc::vec::Vec;

/// A guest-memory access the implementation refused (outside the guest's
/// RAM, or the address range wraps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError {
    /// Guest physical address of the refused access.
    pub gpa: u64,
    /// Its length in bytes.
    pub len: usize,
}

/// One guest's physical memory (its RAM), addressed by guest physical
/// address (GPA, the guest's IPA).
///
/// Implementations must refuse, with [`MemError`] and without touching
/// anything, every access that is not entirely inside the guest's RAM,
/// including ranges whose end overflows `u64`. A refused access must not be
/// partially performed.
pub trait GuestMemory {
    /// Copies `buf.len()` bytes at `gpa` into `buf`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError>;

    /// Copies `data` to guest memory at `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError>;

    /// A full memory barrier between this device's earlier and later guest
    /// memory accesses, as vCPUs on other CPUs observe them (`dmb ish` on
    /// Arm). The virtqueue code calls it where virtio 1.x §2.7.13 asks for
    /// one: after reading `avail.idx` and before reading the ring and
    /// descriptors it covers, and after writing used elements and before
    /// publishing `used.idx` (and before reading `avail.flags`).
    ///
    /// The default does nothing, which is right for memory no other CPU
    /// sees (such as [`VecMemory`]); dom0's mapping of real guest RAM must
    /// override it.
    fn fence(&self) {}

    /// Reads a little-endian `u16` (virtio structures are little-endian,
    /// §1.4).
    fn read_u16(&self, gpa: u64) -> Result<u16, MemError> {
        let mut b = [0; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes a little-endian `u16`.
    fn write_u16(&mut self, gpa: u64, value: u16) -> Result<(), MemError> {
        self.write(gpa, &value.to_le_bytes())
    }
}

/// Guest memory backed by a `Vec`: `bytes[0]` is at guest physical address
/// `base`. For host tests (here and in dom0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecMemory {
    base: u64,
    bytes: Vec<u8>,
}

impl VecMemory {
    /// `size` zeroed bytes at `base`.
    pub fn new(base: u64, size: usize) -> Self {
        VecMemory { base, bytes: vec![0; size] }
    }

    /// Guest physical address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The whole RAM.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole RAM, writable (tests scribble on it directly).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// The index range of `len` bytes at `gpa`, if all of them are RAM.
    fn range(&self, gpa: u64, len: usize) -> Result<core::ops::Range<usize>, MemError> {
        let err = MemError { gpa, len };
        let start = gpa.checked_sub(self.base).ok_or(err)?;
        let start = usize::try_from(start).map_err(|_| err)?;
        let end = start.checked_add(len).ok_or(err)?;
        if end > self.bytes.len() {
            return Err(err);
        }
        Ok(start..end)
    }
}

impl GuestMemory for VecMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let range = self.range(gpa, buf.len())?;
        let src = self.bytes.get(range).ok_or(MemError { gpa, len: buf.len() })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let range = self.range(gpa, data.len())?;
        let dst = self.bytes.get_mut(range).ok_or(MemError { gpa, len: data.len() })?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x4000_0000;

    #[test]
    fn access_inside_ram_reads_back_what_was_written() {
        let mut m = VecMemory::new(BASE, 64);
        m.write(BASE + 60, &[1, 2, 3, 4]).unwrap();
        let mut b = [0; 4];
        m.read(BASE + 60, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert_eq!(m.bytes()[60..64], [1, 2, 3, 4]);
        m.write_u16(BASE, 0xBEEF).unwrap();
        assert_eq!(m.read_u16(BASE).unwrap(), 0xBEEF);
        assert_eq!(m.bytes()[0..2], [0xEF, 0xBE]);
    }

    #[test]
    fn access_below_base_is_refused() {
        let mut m = VecMemory::new(BASE, 64);
        assert_eq!(m.write(BASE - 1, &[0]), Err(MemError { gpa: BASE - 1, len: 1 }));
        assert!(m.read(0, &mut [0; 1]).is_err());
    }

    #[test]
    fn access_straddling_the_end_is_refused_and_not_partially_done() {
        let mut m = VecMemory::new(BASE, 64);
        assert!(m.write(BASE + 62, &[9, 9, 9]).is_err());
        assert!(m.bytes().iter().all(|&b| b == 0));
        assert!(m.read(BASE + 64, &mut [0; 1]).is_err());
        // An empty access at the very end is inside.
        assert!(m.read(BASE + 64, &mut []).is_ok());
    }

    #[test]
    fn access_whose_end_overflows_u64_is_refused() {
        let mut m = VecMemory::new(u64::MAX - 3, 4);
        assert!(m.write(u64::MAX - 3, &[1, 2, 3, 4]).is_ok());
        assert!(m.write(u64::MAX, &[1, 2]).is_err());
        let m = VecMemory::new(BASE, 64);
        assert!(m.read(u64::MAX, &mut [0; 2]).is_err());
    }
}
