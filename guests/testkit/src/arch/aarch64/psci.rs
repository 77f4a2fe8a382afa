//! PSCI 1.1 and SMCCC calls through `hvc #0` (Arm DEN 0022, DEN 0028). Every
//! call is guarded: where EL2 makes `hvc` UNDEFINED the caller gets `Err`
//! instead of an exception.

use super::exception::{guarded_hvc, Caught};

pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const CPU_OFF: u32 = 0x8400_0002;
pub const CPU_ON: u32 = 0xc400_0003;
pub const AFFINITY_INFO: u32 = 0xc400_0004;
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
pub const SYSTEM_OFF: u32 = 0x8400_0008;
pub const SYSTEM_RESET: u32 = 0x8400_0009;
pub const PSCI_FEATURES: u32 = 0x8400_000a;
pub const SMCCC_VERSION: u32 = 0x8000_0000;

pub const SUCCESS: i64 = 0;
pub const NOT_SUPPORTED: i64 = -1;
pub const INVALID_PARAMETERS: i64 = -2;
pub const DENIED: i64 = -3;
pub const ALREADY_ON: i64 = -4;
pub const ON_PENDING: i64 = -5;

/// AFFINITY_INFO results.
pub const AFFINITY_ON: i64 = 0;
pub const AFFINITY_OFF: i64 = 1;
pub const AFFINITY_ON_PENDING: i64 = 2;

/// Calls `function` with up to three arguments; `Ok(x0 as i64)`.
pub fn call(function: u32, a1: u64, a2: u64, a3: u64) -> Result<i64, Caught> {
    guarded_hvc([function as u64, a1, a2, a3]).map(|r| r[0] as i64)
}

/// Any SMCCC fast call, all four result registers.
pub fn call_raw(regs: [u64; 4]) -> Result<[u64; 4], Caught> {
    guarded_hvc(regs)
}

/// PSCI SYSTEM_OFF; parks this vCPU if the call returns.
pub fn system_off() -> ! {
    let _ = call(SYSTEM_OFF, 0, 0, 0);
    park()
}

/// PSCI SYSTEM_RESET; parks this vCPU if the call returns.
pub fn system_reset() -> ! {
    let _ = call(SYSTEM_RESET, 0, 0, 0);
    park()
}

/// PSCI CPU_OFF for this vCPU; parks it if the call returns.
pub fn cpu_off() -> ! {
    let _ = call(CPU_OFF, 0, 0, 0);
    park()
}

pub fn park() -> ! {
    super::cpu::disable_irqs();
    loop {
        super::cpu::wfi();
    }
}
