//! Physical interrupts: which VM owns each SPI (dom0's passed-through
//! devices), and where each interrupt this CPU takes goes: the scheduler's
//! kick SGI and slice timer, the GIC maintenance interrupt, or a VM's
//! hardware-linked interrupt (its PPIs to the running vCPU, its SPIs to the
//! VM they were given to).

use core::sync::atomic::{AtomicU16, Ordering};

use log::{trace, warn};

use crate::arch::gic;
use crate::arch::timer::VTIMER_PPI;
use crate::sched;
use crate::vgic::{HwPlaced, ListRegisters};
use crate::vm::{self, Vcpu, Vm, VmId};

/// The INTID field of an interrupt acknowledge (GICC_IAR / ICC_IAR1_EL1).
const IAR_INTID: u32 = 0x3ff;
/// INTIDs from here on are special (1023: nothing pending).
const FIRST_SPECIAL_INTID: u32 = 1020;

/// Which VM each physical SPI was given to: its id + 1, 0 for none (so
/// that the table is zero at boot: .bss, not 2 KiB of the image).
static SPI_OWNER: [AtomicU16; 1024] = [const { AtomicU16::new(0) }; 1024];

/// Gives physical SPI `intid` to `vm`.
pub fn set_spi_owner(intid: u32, vm: VmId) {
    if let Some(slot) = SPI_OWNER.get(intid as usize) {
        slot.store(vm.0.saturating_add(1), Ordering::Relaxed);
    }
}

/// The VM a physical SPI belongs to.
pub fn spi_owner(intid: u32) -> Option<VmId> {
    let owner = SPI_OWNER.get(intid as usize)?.load(Ordering::Relaxed);
    owner.checked_sub(1).map(VmId)
}

/// Takes every pending physical interrupt. `current`: the VM and vCPU this
/// CPU was running (None when idle).
#[inline(always)]
pub fn handle_irqs(current: Option<(&Vm, &Vcpu)>) {
    handle_irqs_from(gic::acknowledge(), current);
}

/// `handle_irqs` with the first interrupt acknowledged already: `first`,
/// as `gic::acknowledge` returned it.
#[inline(never)]
fn handle_irqs_from(first: u32, current: Option<(&Vm, &Vcpu)>) {
    let mut acknowledged = Some(first);
    loop {
        let iar = acknowledged.take().unwrap_or_else(gic::acknowledge);
        let intid = iar & IAR_INTID;
        if intid >= FIRST_SPECIAL_INTID {
            return;
        }
        gic::priority_drop(iar);
        trace!("physical interrupt {intid}");
        if intid == gic::SGI_KICK || Some(intid) == crate::machine::maintenance_intid() {
            gic::deactivate(iar);
            if let Some((vm, vcpu)) = current {
                if intid == gic::SGI_KICK {
                    vcpu.needs_flush.store(true, Ordering::Release);
                } else {
                    // The maintenance interrupt is a level: it stays asserted
                    // (and would be taken again at once) until the list
                    // registers are read back, e.g. the guest EOI'd a
                    // software level interrupt whose LR asks for EOI
                    // maintenance. Fold them back and refill now.
                    crate::interrupts::flush_interrupts(vm, vcpu);
                }
            } else if intid != gic::SGI_KICK {
                // No vCPU loaded, so no list register to wait for: the
                // level must not stay asserted, or this loop never ends.
                gic::HwListRegisters.set_underflow_irq(false);
            }
            if intid == gic::SGI_KICK {
                sched::on_kick();
            }
            continue;
        }
        if sched::is_timer(intid) {
            gic::deactivate(iar);
            sched::on_timer();
            continue;
        }
        // Hardware-linked: stays active until the owner's EOI deactivates
        // it. PPIs belong to the running vCPU, SPIs to the VM they were
        // given to.
        let owner = if intid < 32 {
            current.map(|(vm, vcpu)| (vm.id, vcpu.index))
        } else {
            spi_owner(intid).map(|id| (id, 0))
        };
        let delivered = match owner {
            // A PPI of the vCPU loaded here: straight into a list register
            // when it can (`inject_hw_loaded`); the vCPU's flush then has
            // nothing to do for it.
            Some((_, index)) if intid < 32 => match current {
                Some((vm, _)) => {
                    let mut lrs = gic::HwListRegisters;
                    // Its usual way needs no effects pass.
                    if matches!(vm.vgic.lock().place_hw_loaded(intid, index, &mut lrs), Ok(HwPlaced::Yes { .. })) {
                        continue;
                    }
                    match crate::interrupts::with_effects(vm, |fx| vm.vgic.lock().inject_hw_loaded(intid, index, &mut lrs, fx)) {
                        Ok(true) => continue,
                        Ok(false) => true,
                        Err(_) => false,
                    }
                }
                None => false,
            },
            Some((id, index)) => match current.filter(|(vm, _)| vm.id == id) {
                Some((vm, _)) => crate::interrupts::with_effects(vm, |fx| vm.vgic.lock().inject_hw(intid, index, fx).is_ok()),
                None => match vm::get(id) {
                    Some(vm) => crate::interrupts::with_effects(&vm, |fx| vm.vgic.lock().inject_hw(intid, index, fx).is_ok()),
                    None => false,
                },
            },
            None => false,
        };
        if !delivered {
            warn!("physical interrupt {intid} has no owner; disabling it");
            gic::set_enabled(intid, false);
            gic::deactivate(iar);
        } else if let Some((vm, vcpu)) = current {
            if owner.map(|o| o.0) == Some(vm.id) {
                vcpu.needs_flush.store(true, Ordering::Release);
            }
        }
    }
}

/// Takes every pending physical interrupt while `vcpu` of `vm` is parked
/// on this CPU (`switch::idle_parked`), as `handle_irqs` would, with its
/// usual wake-up first: its own virtual timer goes straight into a free
/// list register (`Vgic::place_hw_loaded`) without the general dispatch.
/// Returns true if that was all that came and the vCPU's CPU interface
/// signals it: the vCPU then has work (`Vgic::has_work` would say so).
/// False says nothing: ask `has_work`.
pub fn handle_irqs_parked(vm: &Vm, vcpu: &Vcpu) -> bool {
    let iar = gic::acknowledge();
    if iar & IAR_INTID != VTIMER_PPI {
        handle_irqs_from(iar, Some((vm, vcpu)));
        return false;
    }
    let placed = vm.vgic.lock().place_hw_loaded(VTIMER_PPI, vcpu.index, &mut gic::HwListRegisters);
    let Ok(HwPlaced::Yes { signalled }) = placed else {
        // Not its usual case (or not linked): the general way, from the
        // start (nothing was done with it yet).
        handle_irqs_from(iar, Some((vm, vcpu)));
        return false;
    };
    // Hardware-linked: the guest's EOI deactivates it.
    gic::priority_drop(iar);
    let next = gic::acknowledge();
    if next & IAR_INTID >= FIRST_SPECIAL_INTID {
        return signalled;
    }
    handle_irqs_from(next, Some((vm, vcpu)));
    false
}

/// Interrupts taken while this CPU idles.
pub fn handle_irqs_idle() {
    handle_irqs(None);
}

