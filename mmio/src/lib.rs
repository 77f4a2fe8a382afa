#![no_std]
//! MMIO accessors that always compile to one plain load or store with a
//! register base and no writeback. A hypervisor can emulate only accesses
//! whose syndrome it gets (ISV = 1); `read_volatile` may become a
//! post-indexed or paired access, which it cannot. (Linux's readl/writel
//! use inline assembly for the same reason.)

#[cfg(target_arch = "aarch64")]
macro_rules! accessor {
    ($read:ident, $write:ident, $ty:ty, $ldr:literal, $str:literal, $reg:literal) => {
        /// # Safety
        /// `addr` must be a mapped device register of this width.
        #[inline(always)]
        pub unsafe fn $read(addr: usize) -> $ty {
            let value: u64;
            // SAFETY: per the caller's contract.
            unsafe { core::arch::asm!(concat!($ldr, " {v:", $reg, "}, [{a}]"), a = in(reg) addr, v = out(reg) value, options(nostack, preserves_flags)) };
            value as $ty
        }

        /// # Safety
        /// `addr` must be a mapped device register of this width.
        #[inline(always)]
        pub unsafe fn $write(addr: usize, value: $ty) {
            // SAFETY: per the caller's contract.
            unsafe { core::arch::asm!(concat!($str, " {v:", $reg, "}, [{a}]"), a = in(reg) addr, v = in(reg) value as u64, options(nostack, preserves_flags)) };
        }
    };
}

#[cfg(target_arch = "aarch64")]
accessor!(read8, write8, u8, "ldrb", "strb", "w");
#[cfg(target_arch = "aarch64")]
accessor!(read32, write32, u32, "ldr", "str", "w");
#[cfg(target_arch = "aarch64")]
accessor!(read64, write64, u64, "ldr", "str", "x");
