//! Trapped system register accesses from VMs (EC 0x18), answered by the
//! policy in `sysreg_policy::policy`; ID registers with the guest's
//! view of the CPU (`idregs`).

use log::trace;

use crate::arch::{inject, TrapFrame};
use crate::esr::SysRegAccess;
use crate::idregs::{self, GuestPlatform};
use crate::sysreg_policy::{self, SysRegPolicy};
use crate::vgic::VgicVersion;
use crate::vm::{vm_warn, Vcpu, Vm};

#[inline(never)]
pub fn handle(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) {
    if frame.esr & sysreg_policy::ISS_WITHOUT_RT == sysreg_policy::SGI1R_WRITE && sgi1r_write_one(vm, vcpu, frame) {
        frame.elr += 4;
        return;
    }
    let access = SysRegAccess::decode(frame.esr);
    let rt = access.rt as usize;
    let value = if rt == 31 { 0 } else { frame.x[rt] };
    match sysreg_policy::policy(access) {
        SysRegPolicy::GicSgi1r => {
            if let Err(e) = crate::interrupts::with_effects(vm, |effects| vm.vgic.lock().sgi1r_write(vcpu.index, value, effects)) {
                vm_warn!(vm, "{}: vcpu{}: ICC_SGI1R_EL1 write {value:#x} refused: {e:?}", vm.name, vcpu.index);
            }
        }
        SysRegPolicy::IdRegister(reg) if access.read => {
            let real = reg.encoding().map_or(0, |(crm, op2)| crate::arch::cpu::read_id_register(crm, op2));
            let platform = GuestPlatform {
                gic_v3: vm.vgic.lock().version() == VgicVersion::V3,
                pa_range: crate::arch::el2::stage2_geometry().2,
            };
            let value = idregs::guest_view(reg, real, platform);
            trace!("{}: vcpu{}: {:?} reads {value:#x} (CPU: {real:#x})", vm.name, vcpu.index, reg);
            if rt != 31 {
                frame.x[rt] = value;
            }
        }
        SysRegPolicy::IdRegister(_) => {
            vm_warn!(vm, "{}: vcpu{}: write to the read-only ID register {:?} at {:#x}; UNDEF", vm.name, vcpu.index, access, frame.elr);
            inject::undefined(frame);
            return;
        }
        SysRegPolicy::ReadsAsZeroWritesIgnored => {
            trace!("{}: vcpu{}: {:?}: RAZ/WI", vm.name, vcpu.index, access);
            if access.read && rt != 31 {
                frame.x[rt] = 0;
            }
        }
        SysRegPolicy::Undefined => {
            vm_warn!(vm, "{}: vcpu{}: access to system register {:?} at {:#x}; UNDEF", vm.name, vcpu.index, access, frame.elr);
            inject::undefined(frame);
            return;
        }
    }
    frame.elr += 4;
}

/// The usual ICC_SGI1R_EL1 write, an SGI to one other vCPU waiting for it:
/// pending and queued there, and that vCPU kicked, without an effects
/// pass. Returns false (nothing done) for any other.
#[inline(always)]
fn sgi1r_write_one(vm: &Vm, vcpu: &Vcpu, frame: &TrapFrame) -> bool {
    let rt = ((frame.esr >> 5) & 0x1f) as usize;
    let value = frame.x.get(rt).copied().unwrap_or(0); // 31: XZR
    let direct = vm.vgic.lock().sgi1r_write_one(vcpu.index, value);
    if let Some(target) = direct {
        crate::interrupts::kick(vm, target);
    }
    direct.is_some()
}
