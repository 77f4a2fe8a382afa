//! The exception vector table's 16 entries (Arm ARM D1.3.1 "Exception
//! vectors"): four groups by where the exception came from, each with a
//! synchronous, IRQ, FIQ and SError entry. The vector code of every image
//! passes the entry's index (0..16) to its Rust handler.

use core::fmt;

/// What kind of exception an entry takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorKind {
    Synchronous,
    Irq,
    Fiq,
    SError,
}

/// Where the exception came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorOrigin {
    /// The current exception level, using SP_EL0.
    CurrentElSp0,
    /// The current exception level, using its own SP_ELx.
    CurrentElSpx,
    /// A lower exception level running AArch64.
    LowerElAarch64,
    /// A lower exception level running AArch32.
    LowerElAarch32,
}

/// A vector table entry, by index (VBAR_ELx + 0x80 * index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vector(pub u64);

impl Vector {
    pub const fn kind(self) -> VectorKind {
        match self.0 % 4 {
            0 => VectorKind::Synchronous,
            1 => VectorKind::Irq,
            2 => VectorKind::Fiq,
            _ => VectorKind::SError,
        }
    }

    /// `None` for an index beyond the table.
    pub const fn origin(self) -> Option<VectorOrigin> {
        match self.0 / 4 {
            0 => Some(VectorOrigin::CurrentElSp0),
            1 => Some(VectorOrigin::CurrentElSpx),
            2 => Some(VectorOrigin::LowerElAarch64),
            3 => Some(VectorOrigin::LowerElAarch32),
            _ => None,
        }
    }

    /// Taken from the exception level the handler runs at.
    pub const fn from_current_el(self) -> bool {
        matches!(self.origin(), Some(VectorOrigin::CurrentElSp0 | VectorOrigin::CurrentElSpx))
    }

    /// Taken from a lower exception level (a guest, for the hypervisor).
    pub const fn from_lower_el(self) -> bool {
        matches!(self.origin(), Some(VectorOrigin::LowerElAarch64 | VectorOrigin::LowerElAarch32))
    }

    /// For reports at exception level `el`: "synchronous from current EL
    /// with SP_EL2" and the like.
    pub const fn at_el(self, el: u8) -> VectorAtEl {
        VectorAtEl { vector: self, el }
    }
}

impl VectorKind {
    pub const fn name(self) -> &'static str {
        match self {
            VectorKind::Synchronous => "synchronous",
            VectorKind::Irq => "IRQ",
            VectorKind::Fiq => "FIQ",
            VectorKind::SError => "SError",
        }
    }
}

/// A [`Vector`] named as seen from exception level `el`.
#[derive(Clone, Copy, Debug)]
pub struct VectorAtEl {
    vector: Vector,
    el: u8,
}

impl fmt::Display for VectorAtEl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.vector.kind().name();
        match self.vector.origin() {
            Some(VectorOrigin::CurrentElSp0) => write!(f, "{kind} from current EL with SP_EL0"),
            Some(VectorOrigin::CurrentElSpx) => write!(f, "{kind} from current EL with SP_EL{}", self.el),
            Some(VectorOrigin::LowerElAarch64) => write!(f, "{kind} from lower EL (AArch64)"),
            Some(VectorOrigin::LowerElAarch32) => write!(f, "{kind} from lower EL (AArch32)"),
            None => write!(f, "vector {}", self.vector.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn entries_are_named_by_origin_and_kind() {
        assert_eq!(format!("{}", Vector(4).at_el(2)), "synchronous from current EL with SP_EL2");
        assert_eq!(format!("{}", Vector(5).at_el(1)), "IRQ from current EL with SP_EL1");
        assert_eq!(format!("{}", Vector(8).at_el(2)), "synchronous from lower EL (AArch64)");
        assert_eq!(format!("{}", Vector(15).at_el(2)), "SError from lower EL (AArch32)");
        assert_eq!(format!("{}", Vector(16).at_el(2)), "vector 16");
        assert!(Vector(1).from_current_el() && !Vector(1).from_lower_el());
        assert!(Vector(11).from_lower_el() && Vector(11).kind() == VectorKind::SError);
        assert!(!Vector(16).from_current_el() && !Vector(16).from_lower_el());
    }
}
