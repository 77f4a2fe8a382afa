//! Typed addresses: host physical, intermediate physical (guest "physical")
//! and EL2 virtual. There is no implicit conversion between address spaces;
//! arithmetic is checked and overflow is an error value, never a wrap.

use core::fmt;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $tag:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            pub const fn new(value: u64) -> Self {
                Self(value)
            }

            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// `self + offset`, or `None` on overflow.
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self - other` in bytes, or `None` if `other` is above `self`.
            pub const fn checked_offset_from(self, other: Self) -> Option<u64> {
                self.0.checked_sub(other.0)
            }

            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 % align == 0
            }

            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 - self.0 % align)
            }

            /// Rounds up to `align`, or `None` on overflow.
            pub const fn align_up(self, align: u64) -> Option<Self> {
                let rem = self.0 % align;
                if rem == 0 {
                    Some(self)
                } else {
                    self.checked_add(align - rem)
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($tag, ":{:#x}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address_type!(
    /// A host physical address.
    PhysAddr,
    "PA"
);
address_type!(
    /// An intermediate physical address: what a VM believes is physical.
    Ipa,
    "IPA"
);
address_type!(
    /// A virtual address in the hypervisor's EL2 translation regime.
    VirtAddr,
    "VA"
);

/// The smallest translation granule used anywhere in the hypervisor.
pub const PAGE_SIZE: u64 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_reports_overflow() {
        assert_eq!(PhysAddr::new(u64::MAX).checked_add(1), None);
        assert_eq!(PhysAddr::new(0x1000).checked_add(0x10), Some(PhysAddr::new(0x1010)));
        assert_eq!(PhysAddr::new(0x10).checked_offset_from(PhysAddr::new(0x20)), None);
        assert_eq!(PhysAddr::new(u64::MAX).align_up(PAGE_SIZE), None);
        assert_eq!(PhysAddr::new(0x1001).align_up(PAGE_SIZE), Some(PhysAddr::new(0x2000)));
        assert_eq!(PhysAddr::new(0x1fff).align_down(PAGE_SIZE), PhysAddr::new(0x1000));
    }
}
