//! The two timers the scheduler uses: the EL2 physical timer (CNTHP, PPI
//! 26), which ends time slices and wakes blocked vCPUs, and the loaded
//! vCPU's EL1 virtual timer (CNTV, PPI 27), read when the vCPU blocks.

use aarch64_cpu::registers::{Readable, Writeable, CNTHP_CTL_EL2, CNTVOFF_EL2, CNTV_CTL_EL0, CNTV_CVAL_EL0};

use super::sysreg::write_sysreg;

/// The EL2 physical timer's PPI (CNTHP).
pub const HYP_TIMER_PPI: u32 = 26;
/// The EL1 virtual timer's PPI, hardware-linked to the running vCPU.
pub const VTIMER_PPI: u32 = 27;

/// Arms the EL2 timer to fire at counter value `deadline`, or disarms it.
pub fn set_hyp_deadline(deadline: Option<u64>) {
    match deadline {
        Some(deadline) => {
            // aarch64-cpu has no CNTHP_CVAL_EL2.
            write_sysreg!("cnthp_cval_el2", deadline);
            CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
        }
        None => CNTHP_CTL_EL2.set(0),
    }
}

/// When the loaded vCPU's virtual timer fires, in physical counter ticks:
/// `None` if it is disabled or masked.
pub fn vtimer_deadline() -> Option<u64> {
    let ctl = CNTV_CTL_EL0.extract();
    let enabled = ctl.is_set(CNTV_CTL_EL0::ENABLE) && !ctl.is_set(CNTV_CTL_EL0::IMASK);
    enabled.then(|| CNTV_CVAL_EL0.get().wrapping_add(CNTVOFF_EL2.get()))
}

/// The loaded vCPU's virtual-timer output line: enabled, condition met
/// (ISTATUS) and not masked (CNTV_CTL_EL0).
pub fn vtimer_line() -> bool {
    let ctl = CNTV_CTL_EL0.extract();
    ctl.is_set(CNTV_CTL_EL0::ENABLE) && ctl.is_set(CNTV_CTL_EL0::ISTATUS) && !ctl.is_set(CNTV_CTL_EL0::IMASK)
}
