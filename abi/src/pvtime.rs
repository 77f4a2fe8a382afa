//! Paravirtualised time (Arm DEN0057, "Arm Paravirtualized Time for
//! Arm-based Systems"): the SMCCC calls a guest uses to find its stolen
//! time, and the structure the hypervisor keeps it in. Linux on arm64 uses
//! it as `pv_time` (the steal column of `/proc/stat`).

use core::mem::{offset_of, size_of};

/// `SMCCC_HV_PV_TIME_FEATURES` (SMC64, standard hypervisor service): x1 is
/// a function ID; 0 if that call is offered, `NOT_SUPPORTED` otherwise.
pub const PV_TIME_FEATURES: u32 = 0xC500_0020;
/// `SMCCC_HV_PV_TIME_ST`: the IPA of the calling vCPU's [`StolenTime`].
pub const PV_TIME_ST: u32 = 0xC500_0021;

/// One vCPU's stolen-time structure (DEN0057 table 2), 64 bytes, little
/// endian. The guest only reads it; the hypervisor writes `stolen_time`
/// before the vCPU runs again after waiting in a run queue.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StolenTime {
    /// 0.
    pub revision: u32,
    /// 0.
    pub attributes: u32,
    /// Nanoseconds the vCPU was runnable but not running, since it was
    /// created.
    pub stolen_time: u64,
    pub reserved: [u64; 6],
}

const _: () = assert!(size_of::<StolenTime>() == 64);
const _: () = assert!(offset_of!(StolenTime, revision) == 0);
const _: () = assert!(offset_of!(StolenTime, attributes) == 4);
const _: () = assert!(offset_of!(StolenTime, stolen_time) == 8);

/// Byte offset of `stolen_time` in a [`StolenTime`].
pub const STOLEN_TIME_OFFSET: u64 = offset_of!(StolenTime, stolen_time) as u64;
/// Bytes of one vCPU's structure; vCPU i's is at `REGION + i * STRIDE`.
pub const STRIDE: u64 = size_of::<StolenTime>() as u64;
