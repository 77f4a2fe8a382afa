//! Virtual machines and their vCPUs, and running a vCPU on this CPU.

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

use spin::Mutex;

use crate::addr::{Ipa, PhysAddr};
use crate::arch::aarch64::exception::TrapFrame;
use crate::arch::aarch64::gic::{self, HwListRegisters};
use crate::arch::aarch64::stage2::Stage2Tables;
use crate::arch::aarch64::vcpu::{self, El1Context, SPSR_EL1H_MASKED};
use crate::arch::aarch64::{cpu, el2};
use crate::vgic::{Effect, Effects, Vgic};

/// A VM's identifier, as dom0 sees it (dom0 is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VmId(pub u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmKind {
    /// The privileged host VM: owns the hardware, may make control calls.
    Dom0,
    Guest,
}

/// A device the hypervisor emulates for a VM: accesses to its IPA window
/// trap (the window is left unmapped at stage 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulatedDevice {
    GicDistributor,
    GicRedistributors,
}

#[derive(Clone, Copy, Debug)]
pub struct EmulatedRegion {
    pub base: Ipa,
    pub size: u64,
    pub device: EmulatedDevice,
}

/// vCPU power states (PSCI).
pub mod power {
    pub const OFF: u8 = 0;
    /// `CPU_ON` accepted; its physical CPU has not picked it up yet.
    pub const ON_PENDING: u8 = 1;
    pub const ON: u8 = 2;
}

/// What a vCPU's physical CPU restores when it (re)enters it.
pub struct VcpuContext {
    pub regs: TrapFrame,
    pub el1: El1Context,
}

pub struct Vcpu {
    pub index: usize,
    /// The MPIDR the vCPU reads (VMPIDR_EL2), as its VM's device tree says.
    pub mpidr: u64,
    /// The physical CPU this vCPU runs on.
    pub pcpu: usize,
    pub power: AtomicU8,
    /// Entry point and context ID of a pending `CPU_ON`.
    pub start: Mutex<(u64, u64)>,
    /// Set when the vGIC has new work for this vCPU: flush the list
    /// registers before re-entering it.
    pub needs_flush: AtomicBool,
    context: UnsafeCell<VcpuContext>,
}

// SAFETY: `context` is only touched by the vCPU's own physical CPU (`pcpu`),
// through `context_mut`, which documents that duty; everything else is
// atomic or locked.
unsafe impl Sync for Vcpu {}

impl Vcpu {
    pub fn new(index: usize, mpidr: u64, pcpu: usize, cntvoff: u64) -> Self {
        let regs = TrapFrame { x: [0; 31], sp: 0, elr: 0, spsr: SPSR_EL1H_MASKED, esr: 0, far: 0 };
        Vcpu {
            index,
            mpidr,
            pcpu,
            power: AtomicU8::new(power::OFF),
            start: Mutex::new((0, 0)),
            needs_flush: AtomicBool::new(false),
            context: UnsafeCell::new(VcpuContext { regs, el1: El1Context::reset(mpidr, cntvoff) }),
        }
    }

    /// # Safety
    /// Only on the vCPU's own physical CPU, while it is not running the
    /// vCPU, with no other reference to the context alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn context_mut(&self) -> &mut VcpuContext {
        // SAFETY: the caller guarantees exclusive access (see above).
        unsafe { &mut *self.context.get() }
    }
}

pub struct Vm {
    pub id: VmId,
    pub name: String,
    pub kind: VmKind,
    /// Stage-2 VMID (8 bits).
    pub vmid: u16,
    pub stage2: Mutex<Stage2Tables>,
    pub stage2_root: PhysAddr,
    pub vtcr: u64,
    /// The VM's RAM: (IPA, PA, size).
    pub ram: Vec<(Ipa, PhysAddr, u64)>,
    pub regions: Vec<EmulatedRegion>,
    /// Physical PPIs hardware-linked to each of its vCPUs.
    pub hw_ppis: Vec<u32>,
    pub vgic: Mutex<Vgic>,
    pub vcpus: Vec<Vcpu>,
}

impl Vm {
    /// The emulated device at `ipa`, and the offset into it.
    pub fn emulated_region(&self, ipa: u64) -> Option<(EmulatedDevice, u64)> {
        self.regions.iter().find_map(|r| {
            let offset = ipa.checked_sub(r.base.as_u64())?;
            (offset < r.size).then_some((r.device, offset))
        })
    }

    /// Translates a guest buffer `[ipa, ipa+len)` that must lie entirely
    /// inside one RAM region into the host physical address of its start.
    pub fn ram_buffer(&self, ipa: u64, len: u64) -> Option<PhysAddr> {
        let end = ipa.checked_add(len)?;
        self.ram.iter().find_map(|&(base, pa, size)| {
            let offset = ipa.checked_sub(base.as_u64())?;
            (end <= base.as_u64() + size).then(|| PhysAddr::new(pa.as_u64() + offset))
        })
    }

    /// Applies what a vGIC operation asks of the physical GIC and the
    /// other CPUs.
    pub fn apply(&self, effects: &Effects) {
        for effect in effects.iter() {
            match effect {
                Effect::Kick(v) if v == vcpu_here(self) => {}
                Effect::Kick(v) => self.kick(v),
                Effect::PhysEnable { intid, enable } => gic::set_enabled(intid, enable),
                Effect::PhysPriority { intid, prio } => gic::set_priority(intid, prio),
                Effect::PhysConfig { intid, edge } => gic::set_edge(intid, edge),
                Effect::PhysTarget { intid, vcpu } => {
                    if let Some(v) = self.vcpus.get(vcpu) {
                        gic::route_spi(intid, v.pcpu)
                    }
                }
                Effect::PhysPending { .. } | Effect::PhysActive { .. } => {
                    // The VM asked to set or clear the pending/active state
                    // of a hardware interrupt; the device owns its line, so
                    // the hypervisor leaves the physical state alone.
                }
            }
        }
    }

    /// Makes vCPU `index` look at its pending interrupts: on this CPU at the
    /// next entry, on another by an SGI.
    pub fn kick(&self, index: usize) {
        let Some(v) = self.vcpus.get(index) else { return };
        v.needs_flush.store(true, Ordering::Release);
        if v.pcpu != cpu::index() {
            gic::send_sgi(gic::SGI_KICK, v.pcpu);
        }
        cpu::send_event();
    }
}

/// Index of the vCPU of `vm` running on this CPU, if any.
fn vcpu_here(vm: &Vm) -> usize {
    match current() {
        Some((current_vm, vcpu)) if core::ptr::eq(current_vm, vm) => vcpu.index,
        _ => usize::MAX,
    }
}

/// Each physical CPU's effects buffer, reused: an `Effects` is a kilobyte,
/// too much to build on every trap.
static EFFECTS: [Mutex<Effects>; cpu::MAX_CPUS] = [const { Mutex::new(Effects::new()) }; cpu::MAX_CPUS];

/// Runs `f` with this CPU's (cleared) effects buffer, then applies what it
/// collected to `vm`.
pub fn with_effects<R>(vm: &Vm, f: impl FnOnce(&mut Effects) -> R) -> R {
    let mut effects = EFFECTS[cpu::index()].lock();
    effects.clear();
    let result = f(&mut effects);
    vm.apply(&effects);
    result
}

/// The vCPU each physical CPU runs.
static CURRENT: [AtomicPtr<Vcpu>; cpu::MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; cpu::MAX_CPUS];
static CURRENT_VM: [AtomicPtr<Vm>; cpu::MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; cpu::MAX_CPUS];
/// Top of each physical CPU's EL2 stack (where trap frames go).
static STACK_TOP: [core::sync::atomic::AtomicUsize; cpu::MAX_CPUS] =
    [const { core::sync::atomic::AtomicUsize::new(0) }; cpu::MAX_CPUS];

pub fn set_stack_top(pcpu: usize, top: usize) {
    STACK_TOP[pcpu].store(top, Ordering::Relaxed);
}

/// The VM and vCPU running on this CPU (None while the CPU is idle).
pub fn current() -> Option<(&'static Vm, &'static Vcpu)> {
    let i = cpu::index();
    let vm = CURRENT_VM[i].load(Ordering::Relaxed);
    let vcpu = CURRENT[i].load(Ordering::Relaxed);
    // SAFETY: both pointers are set together by `run` from `&'static`
    // references (VMs are never freed while one of their vCPUs runs).
    unsafe { Some((vm.as_ref()?, vcpu.as_ref()?)) }
}

/// This CPU runs no vCPU any more.
pub fn clear_current() {
    let i = cpu::index();
    CURRENT[i].store(core::ptr::null_mut(), Ordering::Relaxed);
    CURRENT_VM[i].store(core::ptr::null_mut(), Ordering::Relaxed);
}

/// Runs `vcpu` of `vm` on this CPU from its saved context. Never returns:
/// traps come back through the exception vectors.
pub fn run(vm: &'static Vm, vcpu: &'static Vcpu) -> ! {
    let i = cpu::index();
    CURRENT_VM[i].store(vm as *const Vm as *mut Vm, Ordering::Relaxed);
    CURRENT[i].store(vcpu as *const Vcpu as *mut Vcpu, Ordering::Relaxed);
    el2::configure_vm_traps();
    el2::set_stage2(vm.vmid, vm.stage2_root, vm.vtcr);
    // The physical PPIs the running vCPU owns (hardware-linked: the virtual
    // timer) and the kick SGI stay enabled; whether the vCPU sees one is
    // its virtual distributor's business.
    for &ppi in &vm.hw_ppis {
        gic::set_enabled(ppi, true);
    }
    gic::set_enabled(gic::SGI_KICK, true);
    if let Some(maintenance) = crate::boot::maintenance_intid() {
        gic::set_enabled(maintenance, true);
    }
    // SAFETY: this is the vCPU's own physical CPU and it is not running.
    let context = unsafe { vcpu.context_mut() };
    context.el1.restore();
    flush_interrupts(vm, vcpu);
    vcpu::enter(&context.regs, STACK_TOP[i].load(Ordering::Relaxed))
}

/// Folds list-register state back into the vGIC and refills the list
/// registers from it; cheap when nothing changed.
pub fn flush_interrupts(vm: &Vm, vcpu: &Vcpu) {
    vcpu.needs_flush.store(false, Ordering::Relaxed);
    let mut lrs = HwListRegisters;
    let result = with_effects(vm, |effects| {
        let mut vgic = vm.vgic.lock();
        vgic.sync(vcpu.index, &mut lrs, effects).and_then(|()| vgic.flush(vcpu.index, &mut lrs, effects))
    });
    if let Err(e) = result {
        log::error!("{}: vcpu{}: vGIC list register update failed: {e:?}", vm.name, vcpu.index);
    }
}
