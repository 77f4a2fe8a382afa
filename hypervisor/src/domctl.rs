//! Domain control: the hypercalls with which dom0's toolstack creates,
//! starts, pauses and destroys guest VMs (`hv_abi::hypercall`). The caller
//! is dom0 (checked by `hypercall`); every argument is still validated.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use hv_abi::hypercall::{guest, CopyDirection, Error, FaultPolicy, Function, IrqAction, VmInfo, VmOption, VmState, MAX_COPY, MAX_NAME};
use hv_abi::ioreq::IO_MAP_POST_WRITES;
use log::{info, warn};

use crate::addr::{Ipa, PAGE_SIZE};
use crate::arch::timer::VTIMER_PPI;
use crate::arch::{cpu, el2, gic, TrapFrame};
use crate::machine;
use crate::mm::machine_frames;
use crate::mm::pagetable::Attributes;
use crate::platform::GicVersion;
use crate::sched;
use crate::schedpolicy::{DEFAULT_WEIGHT, MAX_WEIGHT};
use crate::stage2::Stage2Tables;
use crate::vgic::{Vgic, VgicVersion};
use crate::vm::{self, power, EmulatedDevice, EmulatedRegion, Forwarded, RamChunk, Vcpu, VcpuStart, Vm, VmKind, VmSpec};

/// Guest RAM comes in chunks of this size (block-mapped at stage 2).
const CHUNK: u64 = 2 << 20;
const CHUNK_PAGES: usize = (CHUNK / PAGE_SIZE) as usize;
/// Most RAM one guest may have.
pub const MAX_MEMORY: u64 = 4 << 30;
/// Most vCPUs one guest may have.
pub const MAX_VCPUS: u64 = crate::vgic::MAX_VCPUS as u64;

#[inline(never)]
pub fn handle(dom0: &Vm, f: Function, frame: &mut TrapFrame) -> Result<u64, Error> {
    let a = frame.x;
    match f {
        Function::VmCreate => create(dom0, a[1], a[2], a[3], a[4], a[5], a[6]),
        Function::VmWrite => write(dom0, a[1], a[2], a[3], a[4]),
        Function::VmSetEntry => set_entry(a[1], a[2], a[3], a[4]),
        Function::VmStart => start(a[1]),
        Function::VmPause => pause(a[1], true),
        Function::VmUnpause => pause(a[1], false),
        Function::VmDestroy => destroy(a[1]),
        Function::VmInfo => info(dom0, a[1], a[2], a[3]),
        Function::IoSetup => crate::ioreq::setup(dom0, a[1]),
        Function::IoMap => io_map(a[1], a[2], a[3], a[4]),
        Function::IoComplete => crate::ioreq::complete(),
        Function::VmCopy => vm_copy(dom0, a[1], a[2], a[3], a[4], a[5]),
        Function::IrqLine => irq_line(a[1], a[2], a[3]),
        // Guest RAM windows in dom0 (guestmap.rs).
        Function::GuestMap => crate::guestmap::map(dom0, a[1], a[2], a[3], a[4]),
        Function::GuestUnmap => crate::guestmap::unmap(dom0, a[1], a[2]),
        Function::VmConfigure => configure(a[1], a[2], a[3]),
        Function::IoShadow => io_shadow(a[1], a[2], a[3], a[4], a[5]),
        Function::MemInfo => {
            let (total, free) = machine_frames::stats().ok_or(Error::NoMemory)?;
            frame.x[1] = total as u64;
            Ok(free as u64)
        }
        _ => Err(Error::NotSupported),
    }
}

/// The guest VM `id` names (dom0 and absent ids are `InvalidParameter`).
fn guest_vm(id: u64) -> Result<Arc<Vm>, Error> {
    vm::guest(id).ok_or(Error::InvalidParameter)
}

/// Reads `len` bytes at `ipa` from dom0's RAM.
fn dom0_bytes(dom0: &Vm, ipa: u64, len: u64) -> Result<&'static [u8], Error> {
    let pa = dom0.ram_buffer(ipa, len).ok_or(Error::BadAddress)?;
    // SAFETY: the range is dom0's RAM, mapped at EL2; dom0 is trapped in
    // this hypercall, so nothing of its changes the bytes while we read.
    Ok(unsafe { core::slice::from_raw_parts(pa.as_u64() as *const u8, len as usize) })
}

/// `VmCreate`'s arguments, checked.
struct CreateArgs<'a> {
    vcpus: usize,
    memory: u64,
    name: &'a str,
    weight: u32,
    /// Physical CPUs the vCPUs may run on (bit i: CPU i; 0: any).
    pin: u64,
}

impl<'a> CreateArgs<'a> {
    fn validate(dom0: &'a Vm, vcpus: u64, memory: u64, name_ipa: u64, name_len: u64, weight: u64, pin: u64) -> Result<Self, Error> {
        if !(1..=MAX_VCPUS).contains(&vcpus)
            || memory < CHUNK
            || !memory.is_multiple_of(CHUNK)
            || memory > MAX_MEMORY
            || !(1..=MAX_NAME as u64).contains(&name_len)
            || weight > MAX_WEIGHT as u64
        {
            return Err(Error::InvalidParameter);
        }
        let name = core::str::from_utf8(dom0_bytes(dom0, name_ipa, name_len)?).map_err(|_| Error::InvalidParameter)?;
        let online = machine::online_mask();
        if pin != 0 && pin & online == 0 {
            return Err(Error::InvalidParameter); // pinned only to CPUs that are not online
        }
        let weight = if weight == 0 { DEFAULT_WEIGHT } else { weight as u32 };
        Ok(CreateArgs { vcpus: vcpus as usize, memory, name, weight, pin: pin & online })
    }
}

/// `VmCreate`: a guest VM with its RAM, stage-2 tables, vGIC and vCPUs,
/// not yet started. Every step undoes itself if a later one fails.
fn create(dom0: &Vm, vcpus: u64, memory: u64, name_ipa: u64, name_len: u64, weight: u64, pin: u64) -> Result<u64, Error> {
    let args = CreateArgs::validate(dom0, vcpus, memory, name_ipa, name_len, weight, pin)?;
    let id = vm::free_id().ok_or(Error::Busy)?;
    let ram = PendingRam::allocate(args.memory)?;
    let version = match machine::platform().gic.version {
        GicVersion::V2 => VgicVersion::V2,
        GicVersion::V3 => VgicVersion::V3,
    };
    let pv_time = crate::pvtime::PendingPage::allocate().ok_or(Error::NoMemory)?;
    let (stage2, regions) = guest_stage2(&ram, &pv_time, version, args.vcpus)?;
    let vgic = guest_vgic(version, args.vcpus)?;
    let placed = PendingPlacement::place(args.vcpus, args.pin)?;
    let cntvoff = cpu::counter();
    let vcpu_list: Vec<Vcpu> = placed.cpus.iter().enumerate().map(|(i, &pcpu)| Vcpu::new(i, i as u64, pcpu, cntvoff).with_allowed(args.pin)).collect();
    let vm = Arc::new(Vm::new(VmSpec {
        id,
        name: String::from(args.name),
        kind: VmKind::Guest,
        stage2: stage2.take(),
        ram: ram.take(),
        regions,
        hw_ppis: vec![VTIMER_PPI],
        pv_time: pv_time.take(),
        vgic,
        vcpus: vcpu_list,
        cntvoff,
        weight: args.weight,
        state: VmState::Created,
    }));
    let placement = placed.keep();
    if let Err(vm) = vm::insert(vm) {
        release(&vm);
        return Err(Error::Busy);
    }
    info!("VM {} '{}' created: {} vCPU(s) on CPUs {placement:?}, {} MiB", id.0, args.name, args.vcpus, args.memory >> 20);
    Ok(id.0 as u64)
}

/// A new VM's RAM: 2 MiB chunks (block-mapped at stage 2), zeroed, at the
/// guest RAM base. Goes back to the allocator unless `take`n.
struct PendingRam(Vec<RamChunk>);

impl PendingRam {
    fn allocate(memory: u64) -> Result<Self, Error> {
        let mut ram = PendingRam(Vec::new());
        for i in 0..memory / CHUNK {
            let pa = machine_frames::alloc(CHUNK_PAGES).ok_or(Error::NoMemory)?;
            cpu::zero(pa, CHUNK);
            ram.0.push(RamChunk { ipa: Ipa::new(guest::RAM_BASE + i * CHUNK), pa, size: CHUNK });
        }
        Ok(ram)
    }

    fn take(mut self) -> Vec<RamChunk> {
        core::mem::take(&mut self.0)
    }
}

impl Drop for PendingRam {
    fn drop(&mut self) {
        free_chunks(&self.0);
    }
}

/// Stage-2 tables under construction: released unless `take`n.
struct PendingStage2(Option<Stage2Tables>);

impl PendingStage2 {
    fn take(mut self) -> Stage2Tables {
        self.0.take().expect("a PendingStage2 holds its tables until taken, once")
    }
}

impl Drop for PendingStage2 {
    fn drop(&mut self) {
        if let Some(stage2) = self.0.take() {
            stage2.release();
        }
    }
}

/// A guest's stage 2: its RAM, its stolen-time page (read-only), and on
/// GICv2 the host's virtual CPU interface as its GICC; and the regions the hypervisor emulates (the
/// distributor, the console UART, on GICv3 the redistributors).
fn guest_stage2(
    ram: &PendingRam,
    pv_time: &crate::pvtime::PendingPage,
    version: VgicVersion,
    vcpus: usize,
) -> Result<(PendingStage2, Vec<EmulatedRegion>), Error> {
    let mut stage2 = PendingStage2(Some(Stage2Tables::new().map_err(|_| Error::NoMemory)?));
    let tables = stage2.0.as_mut().ok_or(Error::NoMemory)?;
    for chunk in &ram.0 {
        tables.map(chunk.ipa, chunk.pa, chunk.size, Attributes::RWX).map_err(|_| Error::NoMemory)?;
    }
    pv_time.map(tables).map_err(|_| Error::NoMemory)?;
    let mut regions = vec![
        EmulatedRegion { base: Ipa::new(guest::GICD_BASE), size: guest::GICD_SIZE, device: EmulatedDevice::GicDistributor },
        EmulatedRegion { base: Ipa::new(guest::UART_BASE), size: guest::UART_SIZE, device: EmulatedDevice::ConsoleUart },
    ];
    match version {
        VgicVersion::V2 => {
            let gicv = machine::platform().gic.gicv.map(|r| r.base).ok_or(Error::NotSupported)?;
            tables.map(Ipa::new(guest::GICC_BASE), gicv, guest::GICC_SIZE, Attributes::DEVICE).map_err(|_| Error::NoMemory)?;
        }
        VgicVersion::V3 => regions.push(EmulatedRegion {
            base: Ipa::new(guest::GICR_BASE),
            size: guest::GICR_STRIDE * vcpus as u64,
            device: EmulatedDevice::GicRedistributors,
        }),
    }
    Ok((stage2, regions))
}

/// A guest's vGIC: 64 SPIs, the virtual timer hardware-linked to each vCPU.
fn guest_vgic(version: VgicVersion, vcpus: usize) -> Result<Vgic, Error> {
    let mut vgic = Vgic::new(version, vcpus, 64, |i| i as u64).map_err(|_| Error::InvalidParameter)?;
    for v in 0..vcpus {
        vgic.link_hw(VTIMER_PPI, Some(v), VTIMER_PPI).map_err(|_| Error::InvalidParameter)?;
    }
    Ok(vgic)
}

/// Physical CPUs chosen for a new VM's vCPUs: given back to the placement
/// count unless `keep`.
struct PendingPlacement {
    cpus: Vec<usize>,
}

impl PendingPlacement {
    fn place(vcpus: usize, pin: u64) -> Result<Self, Error> {
        let cpus = sched::place(vcpus, pin, machine::online_cpus()).ok_or(Error::InvalidParameter)?;
        Ok(PendingPlacement { cpus })
    }

    fn keep(mut self) -> Vec<usize> {
        core::mem::take(&mut self.cpus)
    }
}

impl Drop for PendingPlacement {
    fn drop(&mut self) {
        for &pcpu in &self.cpus {
            sched::unplace(pcpu);
        }
    }
}

fn free_chunks(chunks: &[RamChunk]) {
    for chunk in chunks {
        // No VM's data may outlive it.
        cpu::zero(chunk.pa, chunk.size);
        if machine_frames::free(chunk.pa, (chunk.size / PAGE_SIZE) as usize).is_err() {
            log::error!("page allocator refused VM memory at {}", chunk.pa);
        }
    }
}

/// Returns a VM's memory and tables (it is out of the table and runs nowhere).
fn release(vm: &Vm) {
    // Wait out any `VmCopy` into its RAM, and refuse later ones.
    *vm.ram_live.write() = false;
    // Dom0's windows onto its RAM go, TLBs included, before the RAM does.
    crate::guestmap::revoke(vm.id);
    free_chunks(&vm.ram);
    for v in &vm.vcpus {
        sched::unplace(v.pcpu());
    }
    // Drop stale translations tagged with its VMID before the VMID is reused.
    el2::set_stage2(vm.vmid, vm.stage2_root, vm.vtcr);
    el2::flush_vm_tlbs();
    if let Some((current, _)) = sched::current() {
        el2::set_stage2(current.vmid, current.stage2_root, current.vtcr);
    }
    if let Some(stage2) = vm.stage2.lock().take() {
        stage2.release();
    }
    if let Some(page) = vm.pv_time {
        crate::pvtime::release(page);
    }
}

fn write(dom0: &Vm, id: u64, dest: u64, src: u64, len: u64) -> Result<u64, Error> {
    let vm = guest_vm(id)?;
    if vm.state() != VmState::Created && vm.state() != VmState::Paused {
        return Err(Error::Busy);
    }
    copy(dom0, &vm, dest, src, len, CopyDirection::ToGuest)
}

/// `VmCopy`: a backend's access to a guest's RAM.
fn vm_copy(dom0: &Vm, id: u64, guest_ipa: u64, dom0_ipa: u64, len: u64, direction: u64) -> Result<u64, Error> {
    let direction = CopyDirection::from_u64(direction).ok_or(Error::InvalidParameter)?;
    if len > MAX_COPY {
        return Err(Error::InvalidParameter);
    }
    let vm = guest_vm(id)?;
    copy(dom0, &vm, guest_ipa, dom0_ipa, len, direction)
}

/// Copies `len` bytes between `[guest_ipa, +len)` of `vm`'s RAM (any
/// chunks) and `[dom0_ipa, +len)` of dom0's (one region). Checks both
/// ranges before copying anything.
fn copy(dom0: &Vm, vm: &Vm, guest_ipa: u64, dom0_ipa: u64, len: u64, direction: CopyDirection) -> Result<u64, Error> {
    let live = vm.ram_live.read();
    if !*live {
        return Err(Error::InvalidParameter);
    }
    let pieces = vm.ram_pieces(guest_ipa, len).ok_or(Error::BadAddress)?;
    let buffer = dom0.ram_buffer(dom0_ipa, len).ok_or(Error::BadAddress)?.as_u64();
    let mut done = 0u64;
    for (pa, n) in pieces {
        // SAFETY: `pa` is `n` bytes of the guest's RAM (a piece of its
        // chunks, held live by `live`) and `buffer + done` `n` bytes of
        // dom0's RAM (checked by `ram_buffer`), both mapped at EL2; they
        // never overlap (a page belongs to one VM).
        unsafe { copy_guest_piece(pa.as_u64() as *mut u8, (buffer + done) as *mut u8, n as usize, direction) };
        done += n;
    }
    // Copies are ordered as their owners see them (a backend writes a used
    // ring entry, then its index, in two calls): DMB ISH.
    core::sync::atomic::fence(Ordering::SeqCst);
    Ok(0)
}

/// Copies `n` bytes between guest RAM at `guest` and dom0's at `dom0`, in
/// the accesses `hv_abi::copy::access_plan` promises on the guest's side
/// (every aligned field read or written whole: the guest may be changing
/// it). Either side may be accessed concurrently by its owner, as a
/// device's DMA would be.
///
/// # Safety
/// Both ranges must be mapped at EL2, readable and writable, and must not
/// overlap.
unsafe fn copy_guest_piece(guest: *mut u8, dom0: *mut u8, n: usize, direction: CopyDirection) {
    /// One access: aligned and volatile on the guest's side, unaligned on
    /// dom0's (its buffer may have any alignment).
    ///
    /// # Safety
    /// As `copy_guest_piece`, for `size_of::<T>()` bytes, `guest` aligned.
    unsafe fn one<T: Copy>(guest: *mut u8, dom0: *mut u8, direction: CopyDirection) {
        let (g, d) = (guest as *mut T, dom0 as *mut T);
        // SAFETY: the caller's contract.
        unsafe {
            match direction {
                CopyDirection::FromGuest => d.write_unaligned(g.read_volatile()),
                CopyDirection::ToGuest => g.write_volatile(d.read_unaligned()),
            }
        }
    }
    let (head, words, tail) = hv_abi::copy::split(guest as usize, n);
    let body = head + words * 8;
    // The aligned middle in a tight loop of 8-byte accesses, the ends as
    // `access_plan` says (`split`).
    for k in 0..words {
        // SAFETY: word `k` of the middle is inside both ranges and
        // `guest + head` is 8-byte aligned.
        unsafe { one::<u64>(guest.add(head + 8 * k), dom0.add(head + 8 * k), direction) };
    }
    let ends = hv_abi::copy::access_plan(guest as usize, head)
        .chain(hv_abi::copy::access_plan(guest as usize + body, tail).map(|(o, s)| (o + body, s)));
    for (at, size) in ends {
        // SAFETY: `at .. at + size` is inside both ranges and `guest + at`
        // is aligned to `size` (`access_plan`).
        unsafe {
            let (g, d) = (guest.add(at), dom0.add(at));
            match size {
                8 => one::<u64>(g, d, direction),
                4 => one::<u32>(g, d, direction),
                2 => one::<u16>(g, d, direction),
                _ => one::<u8>(g, d, direction),
            }
        }
    }
}

/// `IrqLine`: dom0 drives one of a guest's SPIs.
fn irq_line(id: u64, intid: u64, action: u64) -> Result<u64, Error> {
    let action = IrqAction::from_u64(action).ok_or(Error::InvalidParameter)?;
    let intid = u32::try_from(intid).ok().filter(|&i| i >= 32).ok_or(Error::InvalidParameter)?;
    let vm = guest_vm(id)?;
    crate::interrupts::with_effects(&vm, |fx| {
        let mut vgic = vm.vgic.lock();
        match action {
            IrqAction::Raise => vgic.set_level(intid, 0, true, fx),
            IrqAction::Lower => vgic.set_level(intid, 0, false, fx),
            IrqAction::Pulse => vgic.pulse(intid, 0, fx),
        }
    })
    .map_err(|_| Error::InvalidParameter)?;
    Ok(0)
}

fn set_entry(id: u64, vcpu: u64, pc: u64, x0: u64) -> Result<u64, Error> {
    let vm = guest_vm(id)?;
    if vm.state() != VmState::Created {
        return Err(Error::Busy);
    }
    let v = vm.vcpus.get(vcpu as usize).ok_or(Error::InvalidParameter)?;
    if !vm.contains_ram(pc, 4) {
        return Err(Error::BadAddress);
    }
    *v.start.lock() = VcpuStart { entry: pc, context: x0 };
    v.power.store(power::ON_PENDING, Ordering::Release);
    Ok(0)
}

/// `VmConfigure`: one of a guest's options, before it starts.
fn configure(id: u64, option: u64, value: u64) -> Result<u64, Error> {
    let vm = guest_vm(id)?;
    if vm.state() != VmState::Created {
        return Err(Error::Busy);
    }
    match VmOption::from_u64(option).ok_or(Error::InvalidParameter)? {
        VmOption::OnFault => {
            let policy = FaultPolicy::from_u64(value).ok_or(Error::InvalidParameter)?;
            vm.on_fault.store(policy as u8, Ordering::Relaxed);
            info!("VM {} '{}': on_fault = {policy:?}", vm.id.0, vm.name);
        }
    }
    Ok(0)
}

fn start(id: u64) -> Result<u64, Error> {
    let vm = guest_vm(id)?;
    if vm.state() != VmState::Created {
        return Err(Error::Busy);
    }
    if vm.vcpus[0].power.load(Ordering::Acquire) != power::ON_PENDING {
        return Err(Error::InvalidParameter); // vCPU 0 has no entry point
    }
    vm.set_state(VmState::Running);
    info!("VM {} '{}' started", vm.id.0, vm.name);
    for v in &vm.vcpus {
        if v.power.load(Ordering::Acquire) == power::ON_PENDING {
            sched::wake(&vm, v.index);
        }
    }
    Ok(0)
}

fn pause(id: u64, pause: bool) -> Result<u64, Error> {
    let vm = guest_vm(id)?;
    match (vm.state(), pause) {
        (VmState::Running, true) => {
            vm.set_state(VmState::Paused);
            for v in &vm.vcpus {
                if v.sched.load(Ordering::Acquire) == sched::state::RUNNING || sched::is_loaded(v) {
                    gic::send_sgi(gic::SGI_KICK, v.pcpu());
                }
            }
            Ok(0)
        }
        (VmState::Paused, false) => {
            vm.set_state(VmState::Running);
            for v in &vm.vcpus {
                let s = v.sched.load(Ordering::Acquire);
                if s == sched::state::RUNNABLE || v.power.load(Ordering::Acquire) == power::ON_PENDING {
                    sched::wake(&vm, v.index);
                }
            }
            Ok(0)
        }
        _ => Err(Error::Busy),
    }
}

fn destroy(id: u64) -> Result<u64, Error> {
    let vm = guest_vm(id)?;
    if vm.state() != VmState::Stopped {
        vm.halt();
    }
    // Wait until none of its vCPUs runs or is loaded anywhere (they stop at
    // their next trap, a parked one at its next look; the kick SGI makes
    // that soon).
    let deadline = cpu::counter() + cpu::counter_frequency();
    while vm.vcpus.iter().any(|v| v.sched.load(Ordering::Acquire) == sched::state::RUNNING || sched::is_loaded(v)) {
        if cpu::counter() > deadline {
            warn!("VM {} '{}': a vCPU did not stop within 1 s; not destroyed", vm.id.0, vm.name);
            return Err(Error::Busy);
        }
        <crate::sync::Yield as spin::RelaxStrategy>::relax();
    }
    sched::forget_vm(&vm, machine::online_cpus());
    vm::remove(vm.id);
    let unanswered = crate::ioreq::forget_vm(&vm);
    if unanswered > 0 {
        info!("VM {} '{}': {unanswered} forwarded access(es) dom0 had not answered: dropped", vm.id.0, vm.name);
    }
    release(&vm);
    info!("VM {} '{}' destroyed", vm.id.0, vm.name);
    Ok(0)
}

/// `IoMap`: accesses to `[base, base+size)` of a `Created` VM go to dom0
/// (including the console UART's window: dom0 then emulates it).
fn io_map(id: u64, base: u64, size: u64, flags: u64) -> Result<u64, Error> {
    if flags & !IO_MAP_POST_WRITES != 0 {
        return Err(Error::InvalidParameter);
    }
    let vm = guest_vm(id)?;
    if vm.state() != VmState::Created {
        return Err(Error::Busy);
    }
    let end = base.checked_add(size).ok_or(Error::InvalidParameter)?;
    if size == 0 || !base.is_multiple_of(4096) || !size.is_multiple_of(4096) || size > 1 << 30 {
        return Err(Error::InvalidParameter);
    }
    let overlaps = |b: u64, s: u64| base < b.saturating_add(s) && b < end;
    // Dom0 may take over the console UART (it then emulates the guest's
    // PL011), but only the whole window.
    let console = |r: &EmulatedRegion| r.device == EmulatedDevice::ConsoleUart && r.base.as_u64() == base && r.size == size;
    let taken = vm.ram.iter().any(|c| overlaps(c.ipa.as_u64(), c.size))
        || vm.regions.iter().any(|r| overlaps(r.base.as_u64(), r.size) && !console(r))
        || overlaps(guest::GICC_BASE, guest::GICC_SIZE)
        || (vm.pv_time.is_some() && overlaps(guest::PV_TIME_BASE, guest::PV_TIME_SIZE))
        || vm.forwarded.read().iter().any(|w| overlaps(w.base, w.size));
    if taken {
        return Err(Error::InvalidParameter);
    }
    vm.forwarded.write().push(Forwarded { base, size, post_writes: flags & IO_MAP_POST_WRITES != 0 });
    Ok(0)
}

/// `IoShadow`: dom0 publishes the value of a register in one of a
/// guest's `IoMap` windows, for the hypervisor to answer reads with
/// (`ioshadow`).
fn io_shadow(id: u64, reg: u64, value: u64, seq: u64, keep: u64) -> Result<u64, Error> {
    let vm = guest_vm(id)?;
    let window = vm.forwarded_at(reg).ok_or(Error::InvalidParameter)?;
    crate::ioreq::serialized(|| vm.shadows.publish(reg, window.base, window.size, value, crate::ioreq::request_count(seq), keep))?;
    Ok(0)
}

fn info(dom0: &Vm, id: u64, buffer: u64, len: u64) -> Result<u64, Error> {
    let size = core::mem::size_of::<VmInfo>() as u64;
    if len < size {
        return Err(Error::InvalidParameter);
    }
    let vm = guest_vm(id)?;
    let pa = dom0.ram_buffer(buffer, size).ok_or(Error::BadAddress)?;
    let stop = *vm.stop.lock();
    let mut out = VmInfo::zeroed();
    out.id = vm.id.0 as u32;
    out.state = vm.state() as u32;
    out.vcpus = vm.vcpus.len() as u32;
    out.stop_reason = stop.reason as u32;
    out.stop_syndrome = stop.syndrome;
    out.stop_address = stop.address;
    out.memory = vm.ram_size();
    let ticks: u64 = vm.vcpus.iter().map(|v| crate::sched::run_ticks(&vm, v)).sum();
    out.cpu_time_ns = (ticks as u128 * 1_000_000_000 / cpu::counter_frequency().max(1) as u128) as u64;
    out.exits = vm.exits();
    let name = vm.name.as_bytes();
    out.name_len = name.len().min(32) as u32;
    out.name[..name.len().min(32)].copy_from_slice(&name[..name.len().min(32)]);
    out.weight = vm.weight;
    out.log_dropped = vm.log_dropped.load(Ordering::Relaxed);
    let bytes = out.to_bytes();
    // SAFETY: `ram_buffer` checked the buffer is dom0's RAM; dom0 is trapped.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), pa.as_u64() as *mut u8, bytes.len()) };
    Ok(size)
}
