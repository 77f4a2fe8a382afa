//! Hypercall ABI v1.
//!
//! Calling convention (SMC Calling Convention, Arm DEN 0028, fast calls):
//! `HVC #0` with the function ID in `x0` and arguments in `x1..=x6`. The
//! result comes back in `x0` as a signed 64-bit value: non-negative on
//! success, one of the negative [`Error`] codes on failure; further results
//! in `x1..=x3`. Registers `x4..=x17` are preserved except where a call
//! documents them as results. PSCI and SMCCC calls (function IDs
//! 0x8400_xxxx / 0xC400_xxxx, 0x8000_xxxx) use the same instruction.
//!
//! Hypervisor calls live in the SMCCC "vendor specific hypervisor service"
//! range: fast call, SMC64, owning entity 6, so IDs are `0xC600_0000 | n`.

/// `HVC` immediate for every call (SMCCC requires 0).
pub const HVC_IMMEDIATE: u16 = 0;

/// ABI version: major in bits [31:16], minor in bits [15:0]. A dom0 built for
/// major M works with any hypervisor of the same major and a minor at least
/// as high as the calls it uses were introduced in.
pub const VERSION_MAJOR: u16 = 1;
pub const VERSION_MINOR: u16 = 0;

pub const fn version() -> u64 {
    ((VERSION_MAJOR as u64) << 16) | VERSION_MINOR as u64
}

const BASE: u32 = 0xC600_0000;

/// Hypercall function IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Function {
    /// `() -> x0 = version()`. Any VM may call it.
    Version = BASE,
    /// Read the hypervisor's log ring (dom0 only).
    /// `(x1 = buffer IPA, x2 = buffer length, x3 = cursor)` →
    /// `x0 = bytes copied, x1 = next cursor, x2 = bytes lost`.
    /// Cursors count bytes ever logged; start with 0. If the cursor is older
    /// than the ring holds, reading starts at the oldest byte held and `x2`
    /// says how many were skipped. 0 bytes copied means up to date. The
    /// buffer must lie in the caller's RAM.
    LogRead = BASE + 1,
    /// Write to the hypervisor's log (any VM; tagged with the VM).
    /// `(x1 = buffer IPA, x2 = length ≤ 256)` → `x0 = 0`.
    LogWrite = BASE + 2,
}

impl Function {
    pub const fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            x if x == Self::Version as u32 => Self::Version,
            x if x == Self::LogRead as u32 => Self::LogRead,
            x if x == Self::LogWrite as u32 => Self::LogWrite,
            _ => return None,
        })
    }

    /// Is `id` in the hypervisor-call range at all (known or not)?
    pub const fn in_range(id: u32) -> bool {
        id & 0xFFFF_0000 == BASE
    }
}

/// Negative error codes in `x0`. `NotSupported` is SMCCC's -1, so callers
/// probing an unknown ID get the answer SMCCC promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Error {
    /// Unknown function ID.
    NotSupported = -1,
    /// An argument is out of range or malformed.
    InvalidParameter = -2,
    /// The caller may not make this call (e.g. a guest calling a dom0 call).
    Denied = -3,
    /// A buffer is not entirely inside the caller's RAM.
    BadAddress = -4,
    /// The hypervisor is out of memory.
    NoMemory = -5,
    /// The target is in a state where the call makes no sense.
    Busy = -6,
}

impl Error {
    pub const fn code(self) -> i64 {
        self as i64
    }

    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            -1 => Self::NotSupported,
            -2 => Self::InvalidParameter,
            -3 => Self::Denied,
            -4 => Self::BadAddress,
            -5 => Self::NoMemory,
            -6 => Self::Busy,
            _ => return None,
        })
    }

    pub const fn description(self) -> &'static str {
        match self {
            Self::NotSupported => "not supported",
            Self::InvalidParameter => "invalid parameter",
            Self::Denied => "permission denied",
            Self::BadAddress => "bad address",
            Self::NoMemory => "out of memory",
            Self::Busy => "busy",
        }
    }
}

/// Splits a raw `x0` into a result or an error. Negative values that are
/// not known codes are reported as `NotSupported`.
pub const fn decode_result(x0: u64) -> Result<u64, Error> {
    let signed = x0 as i64;
    if signed >= 0 {
        Ok(x0)
    } else {
        match Error::from_code(signed) {
            Some(e) => Err(e),
            None => Err(Error::NotSupported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_in_the_vendor_hypervisor_range() {
        for f in [Function::Version, Function::LogRead, Function::LogWrite] {
            assert_eq!(Function::from_id(f as u32), Some(f));
            assert!(Function::in_range(f as u32));
            // SMCCC: bit 31 fast call, bit 30 SMC64, bits [29:24] owner 6.
            assert_eq!((f as u32) >> 24, 0xC6);
        }
        assert_eq!(Function::from_id(0xC600_FFFF), None);
        assert!(!Function::in_range(0x8400_0000));
    }

    #[test]
    fn results_decode_errors_and_values() {
        assert_eq!(decode_result(5), Ok(5));
        assert_eq!(decode_result(Error::Denied.code() as u64), Err(Error::Denied));
        assert_eq!(decode_result(-99i64 as u64), Err(Error::NotSupported));
        assert_eq!(Error::NotSupported.code(), -1);
    }
}
