//! Paravirtualised stolen time for guests (Arm DEN0057): the SMCCC calls
//! that find it, and the page that holds it. Each guest has one page of the
//! hypervisor's, mapped read-only at `guest::PV_TIME_BASE` (outside its
//! RAM), with one 64-byte `StolenTime` per vCPU. The scheduler counts how
//! long a vCPU waited in a run queue (`Vcpu::steal_ticks`) and `publish`es
//! it here, on the vCPU's own CPU, before the vCPU runs again.
//!
//! Dom0 gets none: its IPA space is the machine's, and it has no use for it.

use core::sync::atomic::Ordering;

use hv_abi::hypercall::guest;
use hv_abi::pvtime::{PV_TIME_FEATURES, PV_TIME_ST, STOLEN_TIME_OFFSET, STRIDE};
use smccc::psci::error::NOT_SUPPORTED;

use crate::addr::{Ipa, PhysAddr, PAGE_SIZE};
use crate::arch::cpu;
use crate::mm::machine_frames;
use crate::mm::pagetable::Attributes;
use crate::stage2::Stage2Tables;
use crate::vm::{Vcpu, Vm};

const _: () = assert!(guest::PV_TIME_SIZE == PAGE_SIZE);
const _: () = assert!(crate::vgic::MAX_VCPUS as u64 * STRIDE <= guest::PV_TIME_SIZE);

/// A new guest's stolen-time page, zeroed (revision 0, attributes 0, no
/// stolen time): freed again unless `take`n.
pub struct PendingPage(Option<PhysAddr>);

impl PendingPage {
    pub fn allocate() -> Option<Self> {
        let pa = machine_frames::alloc(1)?;
        cpu::zero(pa, PAGE_SIZE);
        Some(PendingPage(Some(pa)))
    }

    /// Maps the page into the guest's stage 2, read-only: a guest store
    /// there is a permission fault, answered as any access to an address
    /// with nothing writable behind it.
    pub fn map(&self, tables: &mut Stage2Tables) -> Result<(), crate::mm::pagetable::MapError> {
        match self.0 {
            Some(pa) => tables.map(Ipa::new(guest::PV_TIME_BASE), pa, guest::PV_TIME_SIZE, Attributes::RO_DATA),
            None => Ok(()),
        }
    }

    pub fn take(mut self) -> Option<PhysAddr> {
        self.0.take()
    }
}

impl Drop for PendingPage {
    fn drop(&mut self) {
        if let Some(pa) = self.0.take() {
            release(pa);
        }
    }
}

/// Gives a guest's page back (it is destroyed; its stage 2 is gone or
/// going with it).
pub fn release(pa: PhysAddr) {
    cpu::zero(pa, PAGE_SIZE);
    if machine_frames::free(pa, 1).is_err() {
        log::error!("page allocator refused a stolen-time page at {pa}");
    }
}

/// Counter ticks in nanoseconds (DEN0057 counts stolen time in ns), in
/// whole seconds and the rest, so nothing overflows for 584 years of
/// ticks at any counter frequency up to 1 GHz and beyond.
pub fn ticks_to_ns(ticks: u64, counter_hz: u64) -> u64 {
    const NS: u64 = 1_000_000_000;
    let hz = counter_hz.max(1);
    (ticks / hz).saturating_mul(NS).saturating_add((ticks % hz).saturating_mul(NS) / hz)
}

/// Writes `vcpu`'s stolen time into its structure. Called on the vCPU's
/// own CPU while it is not running, so the guest sees the value from the
/// moment it runs again.
pub fn publish(vm: &Vm, vcpu: &Vcpu) {
    let Some(page) = vm.pv_time else { return };
    let ns = ticks_to_ns(vcpu.steal_ticks.load(Ordering::Relaxed), cpu::counter_frequency());
    let field = page.as_u64() + vcpu.index as u64 * STRIDE + STOLEN_TIME_OFFSET;
    // SAFETY: `page` is the VM's own stolen-time page, a whole page the
    // hypervisor allocated and maps at EL2 (as all RAM), kept until the VM
    // is released; the vCPU index is below MAX_VCPUS, so the 8-byte,
    // 8-aligned field lies inside it (asserted above). The guest maps it
    // read-only, so only this CPU, for this vCPU, writes these bytes.
    unsafe { core::ptr::write_volatile(field as *mut u64, ns.to_le()) };
}

/// `SMCCC_ARCH_FEATURES` for the calls this module answers: whether
/// `function` is offered to `vm`, `None` if it is not one of them.
pub fn arch_feature(vm: &Vm, function: u32) -> Option<bool> {
    (function == PV_TIME_FEATURES).then_some(vm.pv_time.is_some())
}

/// The PV-time calls (DEN0057 section 4): their answer in x0, `None` if
/// `id` is not one of them. A VM without a stolen-time page gets
/// `NOT_SUPPORTED` for each, as for any unknown function.
pub fn call(vm: &Vm, vcpu: &Vcpu, id: u32, a1: u64) -> Option<i64> {
    let offered = vm.pv_time.is_some();
    let not_supported = NOT_SUPPORTED as i64;
    match id {
        PV_TIME_FEATURES => {
            // x1 is a function ID; the upper bits of a 32-bit argument are
            // ignored (SMCCC 1.1: w1).
            let asked = a1 as u32;
            Some(if offered && (asked == PV_TIME_FEATURES || asked == PV_TIME_ST) { 0 } else { not_supported })
        }
        PV_TIME_ST => Some(if offered { (guest::PV_TIME_BASE + vcpu.index as u64 * STRIDE) as i64 } else { not_supported }),
        _ => None,
    }
}
