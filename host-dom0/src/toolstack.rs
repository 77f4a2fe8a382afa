//! The toolstack: guest VMs from the boot bundle's configurations
//! (`vms/*.toml`, `hv_vmconfig`), created, controlled and inspected with the
//! hypervisor's domain-control calls, and the guests' console output.
//!
//! Creating a VM checks everything first (kernel and initrd present and
//! fitting, device tree built and placed; `kernel_image`), then `VmCreate`,
//! `VmWrite` of each piece, `VmSetEntry` for vCPU 0 (x0 = the device
//! tree's address, as arm64 Linux expects) and `VmStart`. If any call after
//! `VmCreate` fails, the VM is destroyed again: no half-made VM is left.
//!
//! Without `/hypervisor` in the device tree nothing here makes a hypercall.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use hv_abi::bundle::{self, Entry};
use hv_abi::ioreq::IO_MAP_POST_WRITES;
use hv_abi::hypercall::{guest, Error, FaultPolicy, Function, StopReason, VmInfo, VmOption, VmState, MAX_VCPUS, MAX_VMS};
use hv_devtree::guest::{build_tree, GuestGic, GuestTreeConfig};
use hv_devtree::platform::{GicVersion, Platform};
use hv_vmconfig::{Loaded, OnFault, VmConfig};

use crate::arch::aarch64::hypercall;
use crate::command::VmRef;
use crate::kernel_image::{self, KernelLayout};
use crate::arch::aarch64::cpu;
use crate::backend::{DiskSlice, SliceError, VirtioSpec};
use crate::guestcon::{Focus, Mux};
use crate::{console, iodev, ioreq, println, vmview};

/// Bytes per `VmWrite` straight from the bundle.
const WRITE_CHUNK: usize = 1 << 20;
/// Bytes per `VmWrite` through the heap, if the hypervisor refuses bundle addresses.
const BOUNCE_CHUNK: usize = 64 << 10;
/// How often `watch` looks for VMs that reset themselves.
const WATCH_MILLIS: u64 = 250;
/// `ConsoleRead` buffer.
const CONSOLE_CHUNK: usize = 1024;
const NO_HYPERVISOR: &str = "no hypervisor: running on bare hardware";

pub struct Toolstack {
    hypervisor: bool,
    /// The boot bundle (read-only, mapped Normal by `mmu::init`), or empty.
    bundle: &'static [u8],
    gic: GuestGic,
    configs: Vec<Loaded>,
    console_cursor: u64,
    /// Poll `ConsoleRead`: set once a VM was created, cleared if the call fails.
    console_live: bool,
    /// `VmWrite` takes bundle addresses as its source (else bounce through the heap).
    direct_writes: bool,
    /// The guests' emulated consoles on dom0's terminal.
    pub mux: Mux,
    /// The configuration of every VM this toolstack created and has not
    /// destroyed, by id: a VM that resets itself is re-created from it.
    live: BTreeMap<u32, VmConfig>,
    /// When `watch` last asked the hypervisor about the live VMs.
    last_watch: u64,
    /// The copies `spawn` made and `unspawn` has not destroyed, by id.
    spawned: Vec<u32>,
    /// The hypervisor's free pages before the first of them.
    spawn_free_before: u64,
    /// The number the next copy's name ends with.
    spawn_next: u32,
}

/// `cycle N NAME` under way (`Toolstack::cycle`).
pub struct Cycle {
    cfg: VmConfig,
    times: u32,
    /// Rounds done.
    done: u32,
    /// The hypervisor's free pages before the first round.
    free_before: u64,
}

/// `spawn N NAME` under way (`Toolstack::spawn`).
pub struct Spawn {
    cfg: VmConfig,
    times: u32,
    /// Copies tried, and started.
    tried: u32,
    started: u32,
}

impl Toolstack {
    pub fn new(platform: &Platform, hypervisor: bool) -> Self {
        let bundle: &'static [u8] = match platform.initrd {
            Some(r) if r.size > 0 && usize::try_from(r.size).is_ok() => {
                // SAFETY: the device tree's initrd, which `mmu::init` maps
                // Normal (read from the same /chosen properties). Under the
                // hypervisor it is the boot bundle, mapped read-only at stage
                // 2 and never written; standalone, it is RAM the loader
                // filled and dom0 never allocates (its heap is in its image).
                unsafe { core::slice::from_raw_parts(r.base.as_u64() as *const u8, r.size as usize) }
            }
            _ => &[],
        };
        let gic = match platform.gic.version {
            GicVersion::V2 => GuestGic::V2,
            GicVersion::V3 => GuestGic::V3,
        };
        Toolstack {
            hypervisor,
            bundle,
            gic,
            configs: Vec::new(),
            console_cursor: 0,
            console_live: false,
            direct_writes: true,
            mux: Mux::new(cpu::counter_frequency()),
            live: BTreeMap::new(),
            last_watch: 0,
            spawned: Vec::new(),
            spawn_free_before: 0,
            spawn_next: 1,
        }
    }

    /// Reads the bundle's `vms/*.toml`, reports errors, starts the `autostart` VMs.
    pub fn boot(&mut self) {
        if self.bundle.is_empty() {
            return;
        }
        let mut files: Vec<(&str, &str)> = Vec::new();
        for entry in bundle::Reader::new(self.bundle) {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    println!("vms: {e}");
                    break;
                }
            };
            let Some(rest) = entry.name.strip_prefix("vms/") else { continue };
            if !rest.ends_with(".toml") || rest.contains('/') {
                continue;
            }
            match core::str::from_utf8(entry.data) {
                Ok(text) => files.push((entry.name, text)),
                Err(_) => println!("vms: {}:1: not UTF-8 text", entry.name),
            }
        }
        let (configs, errors) = hv_vmconfig::load_all(files);
        for e in &errors {
            println!("vms: {e}");
        }
        self.configs = configs;
        if self.configs.is_empty() {
            return;
        }
        let names: Vec<&str> = self.configs.iter().map(|l| l.config.name.as_str()).collect();
        println!("vms: {} configured in the bundle: {}", names.len(), names.join(", "));
        let autostart: Vec<VmConfig> =
            self.configs.iter().filter(|l| l.config.autostart).map(|l| l.config.clone()).collect();
        // Create them all first, then start them all: a guest that stops at
        // once must not find itself the last one while others are still
        // being loaded (the hypervisor's `hv.until_idle` watches for that).
        let mut created = Vec::new();
        let began = cpu::counter();
        for cfg in autostart {
            if !self.hypervisor {
                println!("vms: autostart {}: {NO_HYPERVISOR}", cfg.name);
                continue;
            }
            match self.create(&cfg, false) {
                Ok(id) => created.push((id, cfg.name)),
                Err(e) => println!("vms: autostart {}: {e}", cfg.name),
            }
        }
        let (tried, mut started) = (created.len(), 0);
        for (id, name) in created {
            match hypercall::vm_op(Function::VmStart, id) {
                Ok(()) => {
                    started += 1;
                    println!("vms: autostart {name}: started VM {id}")
                }
                Err(e) => println!("vms: autostart {name}: VmStart failed: {}", e.description()),
            }
        }
        // From dom0's virtual counter, printing included (scripts/bench.sh
        // --scale reads this line).
        let us = (cpu::counter() - began) * 1_000_000 / cpu::counter_frequency().max(1);
        println!("vms: autostart: {started} of {tried} VM(s) created and started in {us} us");
    }

    /// `cycle N NAME`: creates (and starts) the configured VM NAME and
    /// destroys it again, N times (a round per [`cycle_round`](Self::cycle_round)),
    /// then compares the hypervisor's free pages with the count before the
    /// first round. `None` if it cannot start (it says why).
    pub fn cycle(&mut self, times: u32, name: &str) -> Option<Cycle> {
        if !self.hypervisor {
            println!("cycle: {NO_HYPERVISOR}");
            return None;
        }
        let cfg = self.configured("cycle", name)?;
        let free_before = free_pages("cycle")?;
        Some(Cycle { cfg, times, done: 0, free_before })
    }

    /// The next round of `c`; `false` once it is over (the last step
    /// reports what `cycle` found).
    pub fn cycle_round(&mut self, c: &mut Cycle) -> bool {
        let (i, times) = (c.done + 1, c.times);
        if c.done >= times {
            report_leak("cycle", &format!("{times} create/destroy cycles of {}", c.cfg.name), c.free_before);
            return false;
        }
        let id = match self.create(&c.cfg, true) {
            Ok(id) => id,
            Err(e) => {
                println!("cycle: create {i} of {times}: {e}");
                return false;
            }
        };
        if let Err(e) = destroy_vm(id) {
            println!("cycle: destroy {i} of {times} (VM {id}): {}", e.description());
            return false;
        }
        self.forget(id);
        c.done = i;
        true
    }

    /// The configuration of the bundle's VM `name`, or says there is none.
    fn configured(&self, command: &str, name: &str) -> Option<VmConfig> {
        let found = self.configs.iter().find(|l| l.config.name == name).map(|l| l.config.clone());
        if found.is_none() {
            println!("{command}: no VM named '{name}' in the bundle's configs (vms/*.toml)");
        }
        found
    }

    /// `spawn N NAME`: creates and starts up to N copies of the configured
    /// VM NAME, named NAME-1, NAME-2, ... (numbering goes on over several
    /// spawns), one per [`spawn_round`](Self::spawn_round), stopping at the
    /// first the hypervisor refuses, e.g. when its memory runs out. They
    /// stay until `unspawn`. `None` if it cannot start (it says why).
    pub fn spawn(&mut self, times: u32, name: &str) -> Option<Spawn> {
        if !self.hypervisor {
            println!("spawn: {NO_HYPERVISOR}");
            return None;
        }
        let cfg = self.configured("spawn", name)?;
        if !cfg.disks.is_empty() || !cfg.nets.is_empty() {
            println!("spawn: {name} has disks or network ports, which its copies would share");
            return None;
        }
        if self.spawned.is_empty() {
            self.spawn_free_before = free_pages("spawn")?;
        }
        Some(Spawn { cfg, times, tried: 0, started: 0 })
    }

    /// The next copy of `s`; `false` once it is over (the last step says
    /// how many were started).
    pub fn spawn_round(&mut self, s: &mut Spawn) -> bool {
        let (name, times) = (s.cfg.name.clone(), s.times);
        let mut copy = s.cfg.clone();
        copy.name = format!("{name}-{}", self.spawn_next);
        let more = if s.tried >= times {
            false
        } else if copy.name.len() > hv_abi::hypercall::MAX_NAME {
            println!("spawn: {}: longer than {} bytes", copy.name, hv_abi::hypercall::MAX_NAME);
            false
        } else {
            s.tried += 1;
            match self.create(&copy, true) {
                Ok(id) => {
                    println!("spawn: started VM {id} ({})", copy.name);
                    self.spawned.push(id);
                    self.spawn_next += 1;
                    s.started += 1;
                    true
                }
                Err(e) => {
                    println!("spawn: create {}: {e}", copy.name);
                    false
                }
            }
        };
        if !more {
            println!("spawn: {} of {times} copies of {name} started; {} spawned VMs exist", s.started, self.spawned.len());
        }
        more
    }

    /// `unspawn`: destroys the copies `spawn` made, then compares the
    /// hypervisor's free pages with the count before the first of them.
    pub fn unspawn(&mut self) {
        if self.spawned.is_empty() {
            return println!("unspawn: no spawned VMs");
        }
        let ids = core::mem::take(&mut self.spawned);
        let mut gone = 0;
        for &id in &ids {
            match destroy_vm(id) {
                Ok(()) => gone += 1,
                // Destroyed already (with `destroy`).
                Err(Error::InvalidParameter) => {}
                Err(e) => println!("unspawn: destroy VM {id}: {}", e.description()),
            }
            self.forget(id);
        }
        self.spawn_next = 1;
        report_leak("unspawn", &format!("{gone} spawned VMs destroyed"), self.spawn_free_before);
    }

    /// `create NAME|FILE`.
    pub fn create_command(&mut self, what: &str) {
        if !self.hypervisor {
            println!("create: {NO_HYPERVISOR}");
            return;
        }
        let configs: Vec<VmConfig> = if what.ends_with(".toml") {
            let entry = match bundle::find(self.bundle, what) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    println!("create: {what}: not in the boot bundle");
                    return;
                }
                Err(e) => {
                    println!("create: {e}");
                    return;
                }
            };
            let Ok(text) = core::str::from_utf8(entry.data) else {
                println!("create: {what}:1: not UTF-8 text");
                return;
            };
            match hv_vmconfig::parse(what, text) {
                Ok(c) => c,
                Err(errors) => {
                    errors.iter().for_each(|e| println!("create: {e}"));
                    return;
                }
            }
        } else {
            match self.configs.iter().find(|l| l.config.name == what) {
                Some(l) => alloc::vec![l.config.clone()],
                None => {
                    println!("create: no VM named '{what}' in the bundle's configs (vms/*.toml)");
                    return;
                }
            }
        };
        if configs.is_empty() {
            println!("create: {what} defines no VM");
        }
        for cfg in configs {
            match self.create(&cfg, true) {
                Ok(id) => println!("started VM {id} ({})", cfg.name),
                Err(e) => println!("create {}: {e}", cfg.name),
            }
        }
    }

    fn file(&self, path: &str) -> Result<Entry<'static>, String> {
        match bundle::find(self.bundle, path) {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err(format!("{path}: not in the boot bundle")),
            Err(e) => Err(format!("{e}")),
        }
    }

    /// Creates one VM (and starts it if `start`); returns its id.
    pub fn create(&mut self, cfg: &VmConfig, start: bool) -> Result<u32, String> {
        // Everything that can be checked without the hypervisor comes first.
        let kernel = self.file(&cfg.kernel)?;
        let layout = kernel_image::layout(kernel.data, cfg.memory).map_err(|e| format!("{}: {e}", cfg.kernel))?;
        let initrd = match &cfg.initrd {
            Some(path) => {
                let entry = self.file(path)?;
                let range = kernel_image::place_initrd(layout.end, entry.data.len() as u64, cfg.memory)
                    .map_err(|e| format!("{path}: {e}"))?;
                Some((entry, range))
            }
            None => None,
        };
        let used_end = initrd.map_or(layout.end, |(_, (_, end))| end);
        if cfg.vcpus > MAX_VCPUS {
            return Err(vmview::create_refused(cfg.vcpus, cfg.memory, Error::InvalidParameter, None));
        }
        let virtio = self.virtio_specs(cfg)?;
        let virtio_slots = virtio.len();
        let dtb = build_tree(&GuestTreeConfig {
            memory: cfg.memory,
            vcpus: cfg.vcpus as usize,
            gic: self.gic,
            bootargs: &cfg.cmdline,
            initrd: initrd.map(|(_, r)| r),
            virtio_slots: virtio_slots as u32,
            test_device: crate::ioreq::enabled(),
        })
        .map_err(|e| format!("device tree: {e}"))?;
        let dtb_ipa = kernel_image::place_dtb(dtb.len() as u64, used_end, cfg.memory)?;
        match self.find_by_name(&cfg.name) {
            Ok(Some(info)) => return Err(format!("a VM named {} already exists (VM {})", cfg.name, info.id)),
            Ok(None) | Err(Error::NotSupported) => {}
            Err(e) => return Err(format!("VmInfo failed: {}", e.description())),
        }

        let id = hypercall::vm_create(cfg.vcpus, cfg.memory, &cfg.name, cfg.weight, cfg.pin_mask()).map_err(|e| {
            let free = hypercall::mem_info().ok().map(|(free, _)| free * 4096);
            vmview::create_refused(cfg.vcpus, cfg.memory, e, free)
        })?;
        if cfg.on_fault == OnFault::Stop {
            if let Err(e) = hypercall::vm_configure(id, VmOption::OnFault, FaultPolicy::Stop as u64) {
                let _ = hypercall::vm_op(Function::VmDestroy, id);
                return Err(format!("VmConfigure (on_fault = \"stop\") failed: {}", e.description()));
            }
        }
        if ioreq::enabled() {
            // Its RAM mapped for the backends; without it they use VmCopy.
            if let Err(e) = ioreq::attach_memory(id, cfg.memory) {
                println!("vms: {}: guest memory not mapped ({e}): its devices use VmCopy", cfg.name);
            }
            // The MMIO test device; a guest works without it, so go on.
            match hypercall::io_map(id, iodev::BASE, iodev::WINDOW, 0) {
                Ok(()) => ioreq::attach_test_device(id),
                Err(e) => println!("vms: {}: IoMap of the test device failed: {}", cfg.name, e.description()),
            }
            // The console: dom0 emulates the guest's PL011; if the
            // hypervisor refuses, its own transmit-only model stays. Writes
            // are posted: a transmitted byte costs the guest one trap, not
            // a round trip through dom0.
            match hypercall::io_map(id, guest::UART_BASE, guest::UART_SIZE, IO_MAP_POST_WRITES) {
                Ok(()) => {
                    ioreq::attach_uart(id);
                    if let Ok(vm) = u16::try_from(id) {
                        self.mux.add(vm, &cfg.name);
                    }
                }
                Err(e) => println!("vms: {}: IoMap of the console UART failed: {}", cfg.name, e.description()),
            }
            if virtio_slots > 0 {
                // Register writes are posted: a queue notification does not
                // wait for dom0 to serve the queue. The device tree lists the
                // slots already, so without them the VM cannot run.
                let size = (virtio_slots as u64 * guest::VIRTIO_STRIDE).next_multiple_of(4096);
                if let Err(e) = hypercall::io_map(id, guest::VIRTIO_BASE, size, IO_MAP_POST_WRITES) {
                    let gone = destroy_vm(id);
                    self.forget(id);
                    return Err(match gone {
                        Ok(()) => format!("IoMap of the virtio devices failed: {} (VM {id} destroyed)", e.description()),
                        Err(d) => format!("IoMap of the virtio devices failed: {}; VmDestroy of VM {id} failed too: {}", e.description(), d.description()),
                    });
                }
                ioreq::attach_virtio(id, virtio);
            }
        }
        let loaded = self.load(id, kernel, &layout, initrd.map(|(e, (at, _))| (e, at)), &dtb, dtb_ipa).and_then(|()| {
            if start {
                hypercall::vm_op(Function::VmStart, id).map_err(|e| format!("VmStart failed: {}", e.description()))
            } else {
                Ok(())
            }
        });
        if let Err(e) = loaded {
            return Err(match destroy_vm(id) {
                Ok(()) => {
                    self.forget(id);
                    format!("{e} (VM {id} destroyed)")
                }
                Err(d) => format!("{e}; VmDestroy of VM {id} failed too: {}", d.description()),
            });
        }
        self.console_live = true;
        self.live.insert(id, cfg.clone());
        Ok(id)
    }

    /// Fills VM `id`'s RAM and sets vCPU 0's entry.
    fn load(
        &mut self,
        id: u32,
        kernel: Entry<'static>,
        layout: &KernelLayout,
        initrd: Option<(Entry<'static>, u64)>,
        dtb: &[u8],
        dtb_ipa: u64,
    ) -> Result<(), String> {
        for seg in &layout.segments {
            let data = kernel.data.get(seg.offset..seg.offset + seg.len).ok_or("kernel segment outside the file")?;
            self.write_from_bundle(id, seg.ipa, data)?;
        }
        if let Some((entry, start)) = initrd {
            self.write_from_bundle(id, start, entry.data)?;
        }
        hypercall::vm_write(id, dtb_ipa, dtb.as_ptr() as u64, dtb.len() as u64)
            .map_err(|e| format!("VmWrite of the device tree failed: {}", e.description()))?;
        hypercall::vm_set_entry(id, 0, layout.entry, dtb_ipa)
            .map_err(|e| format!("VmSetEntry failed: {}", e.description()))?;
        Ok(())
    }

    /// `VmWrite`s `data` (inside the bundle) to `dst` in VM `id`: straight
    /// from the bundle's address, or through a heap buffer if the
    /// hypervisor does not accept the bundle as a source (`BadAddress`).
    fn write_from_bundle(&mut self, id: u32, dst: u64, data: &[u8]) -> Result<(), String> {
        let mut bounce: Vec<u8> = Vec::new();
        let mut done = 0;
        while done < data.len() {
            let chunk = if self.direct_writes { WRITE_CHUNK } else { BOUNCE_CHUNK };
            let piece = &data[done..data.len().min(done + chunk)];
            let to = dst + done as u64;
            let result = if self.direct_writes {
                hypercall::vm_write(id, to, piece.as_ptr() as u64, piece.len() as u64)
            } else {
                bounce.clear();
                bounce.extend_from_slice(piece);
                hypercall::vm_write(id, to, bounce.as_ptr() as u64, bounce.len() as u64)
            };
            // Busy devices' turns and waiting answers go on meanwhile
            // (the event loop's other services wait for this step).
            ioreq::poll_pending();
            match result {
                Ok(()) => done += piece.len(),
                Err(Error::BadAddress) if self.direct_writes => self.direct_writes = false,
                Err(e) => return Err(format!("VmWrite to {to:#x} failed: {}", e.description())),
            }
        }
        Ok(())
    }

    /// Every VM the hypervisor reports.
    fn all(&self) -> Result<Vec<VmInfo>, Error> {
        let mut out = Vec::new();
        for id in 1..u32::from(MAX_VMS) {
            match hypercall::vm_info(id) {
                Ok(info) => out.push(info),
                Err(Error::InvalidParameter) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn find_by_name(&self, name: &str) -> Result<Option<VmInfo>, Error> {
        Ok(self.all()?.into_iter().find(|i| i.name() == name))
    }

    fn resolve(&self, vm: VmRef<'_>) -> Result<VmInfo, String> {
        let failed = |e: Error| format!("VmInfo failed: {}", e.description());
        match vm {
            VmRef::Id(id) => hypercall::vm_info(id).map_err(|e| match e {
                Error::InvalidParameter => format!("no VM with id {id}"),
                e => failed(e),
            }),
            VmRef::Name(name) => self.find_by_name(name).map_err(failed)?.ok_or_else(|| format!("no VM named '{name}'")),
        }
    }

    /// `list`.
    pub fn list(&self) {
        if !self.hypervisor {
            println!("list: {NO_HYPERVISOR}");
            return;
        }
        println!("{}", vmview::list_header());
        match self.all() {
            Ok(vms) => vms.iter().for_each(|i| println!("{}", vmview::list_row(i))),
            Err(e) => println!("list: VmInfo failed: {}", e.description()),
        }
    }

    /// `info VM`.
    pub fn info(&self, vm: VmRef<'_>) {
        if !self.hypervisor {
            println!("info: {NO_HYPERVISOR}");
            return;
        }
        match self.resolve(vm) {
            Ok(info) => {
                let config = self.configs.iter().find(|l| l.config.name == info.name());
                vmview::info_lines(&info, config).iter().for_each(|l| println!("{l}"));
            }
            Err(e) => println!("info {vm}: {e}"),
        }
    }

    /// `destroy`, `pause`, `unpause`.
    pub fn control(&mut self, f: Function, vm: VmRef<'_>) {
        let (verb, done, call) = match f {
            Function::VmDestroy => ("destroy", "destroyed", "VmDestroy"),
            Function::VmPause => ("pause", "paused", "VmPause"),
            _ => ("unpause", "unpaused", "VmUnpause"),
        };
        if !self.hypervisor {
            println!("{verb}: {NO_HYPERVISOR}");
            return;
        }
        let info = match self.resolve(vm) {
            Ok(i) => i,
            Err(e) => {
                println!("{verb} {vm}: {e}");
                return;
            }
        };
        let done_op = if f == Function::VmDestroy { destroy_vm(info.id) } else { hypercall::vm_op(f, info.id) };
        match done_op {
            Ok(()) => {
                if f == Function::VmDestroy {
                    self.forget(info.id);
                }
                println!("{done} VM {} ({})", info.id, info.name())
            }
            Err(e) => println!("{verb} {vm}: {call} failed: {}", e.description()),
        }
    }

    /// Prints new guest console output (the emulated consoles through the
    /// multiplexer, and the hypervisor's console ring for guests whose UART
    /// it models itself). With dom0 focused the output goes above the
    /// prompt, which is redrawn with the partly typed `line`.
    pub fn poll_console(&mut self, prompt: &str, line: &str) {
        let mut text = Vec::new();
        self.read_console_ring(&mut text);
        let now = cpu::counter();
        if ioreq::output_pending() {
            for (vm, bytes) in ioreq::take_output() {
                self.mux.output(vm, &bytes, now, &mut text);
            }
        }
        self.mux.flush_partial(now, &mut text);
        self.print_above_prompt(&text, prompt, line);
    }

    fn print_above_prompt(&self, text: &[u8], prompt: &str, line: &str) {
        if text.is_empty() {
            return;
        }
        if self.mux.focus() != Focus::Dom0 {
            console::write_bytes(text);
            return;
        }
        // Nothing typed: overwrite the bare prompt; else keep the line and go below it.
        console::write_bytes(if line.is_empty() { b"\r\x1b[K" } else { b"\r\n" });
        console::write_bytes(text);
        console::write_bytes(prompt.as_bytes());
        console::write_bytes(line.as_bytes());
    }

    /// Appends what is new in the hypervisor's guest console ring (lines
    /// it already prefixed with the VM's name), sanitised.
    fn read_console_ring(&mut self, text: &mut Vec<u8>) {
        if !self.console_live {
            return;
        }
        let mut buf = [0u8; CONSOLE_CHUNK];
        loop {
            let chunk = match hypercall::console_read(&mut buf, self.console_cursor) {
                Ok(c) => c,
                Err(e) => {
                    // Not there (yet) or broken: stop polling rather than spam.
                    self.console_live = false;
                    if e != Error::NotSupported {
                        text.extend_from_slice(format!("[dom0] guest console: ConsoleRead failed: {}\r\n", e.description()).as_bytes());
                    }
                    break;
                }
            };
            self.console_cursor = chunk.next_cursor;
            if chunk.lost != 0 {
                if text.last().is_some_and(|&b| b != b'\n') {
                    text.extend_from_slice(b"\r\n");
                }
                text.extend_from_slice(format!("[dom0] guest console: {} bytes lost\r\n", chunk.lost).as_bytes());
            }
            sanitise_guest_text(&buf[..chunk.copied], text);
            if chunk.copied == 0 {
                break;
            }
        }
        if text.last().is_some_and(|&b| b != b'\n') {
            text.extend_from_slice(b"\r\n");
        }
    }

    /// The virtio devices `cfg` asks for, in slot order: the console, the
    /// disks (slices of dom0's disk), the network ports.
    fn virtio_specs(&self, cfg: &VmConfig) -> Result<Vec<VirtioSpec>, String> {
        if !ioreq::enabled() {
            if cfg.virtio_console || !cfg.disks.is_empty() || !cfg.nets.is_empty() {
                return Err("virtio devices need IO forwarding, which is off".to_string());
            }
            return Ok(Vec::new());
        }
        let mut specs = Vec::new();
        if cfg.virtio_console {
            specs.push(VirtioSpec::Console);
        }
        for (i, d) in cfg.disks.iter().enumerate() {
            let disk = ioreq::shared_disk().ok_or_else(|| format!("disk {}: dom0 has no disk to share", i + 1))?;
            let slice = DiskSlice::new(disk, d.offset, d.size).map_err(|e| match e {
                SliceError::PastEnd { capacity } => format!("disk {}: past the end of dom0's disk ({capacity} bytes)", i + 1),
                SliceError::Unaligned => format!("disk {}: not whole sectors", i + 1),
            })?;
            specs.push(VirtioSpec::Block { slice, read_only: d.readonly });
        }
        for n in &cfg.nets {
            specs.push(VirtioSpec::Net { mac: n.mac });
        }
        Ok(specs)
    }

    /// Restarts the VMs that reset themselves (PSCI SYSTEM_RESET): each is
    /// destroyed and created again from its configuration, under the same
    /// name. Asks the hypervisor at most every `WATCH_MILLIS`.
    /// What it prints goes above the shell's `prompt` and partly typed
    /// `line`, as guest output does (`poll_console`).
    pub fn watch(&mut self, prompt: &str, line: &str) {
        let now = cpu::counter();
        if now.wrapping_sub(self.last_watch) < cpu::counter_frequency() * WATCH_MILLIS / 1000 {
            return;
        }
        self.last_watch = now;
        let resets: Vec<u32> = self
            .live
            .keys()
            .copied()
            .filter(|&id| {
                hypercall::vm_info(id).is_ok_and(|i| {
                    i.state == VmState::Stopped as u32 && i.stop_reason == StopReason::SystemReset as u32
                })
            })
            .collect();
        let mut text = Vec::new();
        for id in resets {
            let Some(cfg) = self.live.get(&id).cloned() else { continue };
            // Print what it said last before its console goes.
            for (vm, bytes) in ioreq::take_output() {
                self.mux.output(vm, &bytes, now, &mut text);
            }
            let note = match destroy_vm(id) {
                Err(e) => {
                    self.live.remove(&id);
                    format!("[dom0] VM {id} ({}) reset itself, but VmDestroy failed: {}\r\n", cfg.name, e.description())
                }
                Ok(()) => {
                    self.forget(id);
                    match self.create(&cfg, true) {
                        Ok(new) => format!("[dom0] VM {id} ({}) reset itself: restarted as VM {new}\r\n", cfg.name),
                        Err(e) => format!("[dom0] VM {id} ({}) reset itself; restarting it failed: {e}\r\n", cfg.name),
                    }
                }
            };
            text.extend_from_slice(note.as_bytes());
        }
        self.print_above_prompt(&text, prompt, line);
    }

    /// VM `id` is destroyed: its backends and console go.
    fn forget(&mut self, id: u32) {
        self.live.remove(&id);
        ioreq::detach(id);
        if let Ok(vm) = u16::try_from(id) {
            let mut text = Vec::new();
            self.mux.remove(vm, &mut text);
            console::write_bytes(&text);
        }
    }

    /// `console VM`: the terminal goes to VM's console.
    pub fn console(&mut self, vm: VmRef<'_>) {
        let info = match self.resolve(vm) {
            Ok(i) => i,
            Err(e) => return println!("console {vm}: {e}"),
        };
        let Ok(id) = u16::try_from(info.id) else { return };
        if !self.mux.attach(id) {
            return println!("console {vm}: VM {} ({}) has no console emulated by dom0", info.id, info.name());
        }
        println!("[dom0] console: attached to VM {} ({}); Ctrl-a three times for the next console or dom0", info.id, info.name());
    }

    /// `log VM`: VM's recent console output.
    pub fn log(&self, vm: VmRef<'_>) {
        let info = match self.resolve(vm) {
            Ok(i) => i,
            Err(e) => return println!("log {vm}: {e}"),
        };
        let history = u16::try_from(info.id).ok().and_then(|id| self.mux.history(id));
        let Some(history) = history else {
            return println!("log {vm}: VM {} ({}) has no console emulated by dom0", info.id, info.name());
        };
        println!("---- last {} bytes of VM {} ({}) ----", history.len(), info.id, info.name());
        let mut text = Vec::new();
        sanitise_guest_text(&history, &mut text);
        if text.last().is_some_and(|&b| b != b'\n') {
            text.extend_from_slice(b"\r\n");
        }
        console::write_bytes(&text);
        println!("----");
    }
}

/// Appends guest text with LF as CR LF and other control characters
/// (escape sequences included) shown as `?`, so a guest cannot drive the
/// terminal.
/// The hypervisor's free pages (`MemInfo`), or says why not.
fn free_pages(command: &str) -> Option<u64> {
    match hypercall::mem_info() {
        Ok((free, _)) => Some(free),
        Err(e) => {
            println!("{command}: MemInfo failed: {}", e.description());
            None
        }
    }
}

/// Compares the hypervisor's free pages now with `before` and says whether
/// `what` left memory behind.
fn report_leak(command: &str, what: &str, before: u64) {
    let Some(after) = free_pages(command) else { return };
    if after == before {
        println!("{command}: {what}: free pages {before} before, {after} after: no memory left behind");
    } else {
        println!("{command}: {what}: free pages {before} before, {after} after: {} pages LEAKED", before as i64 - after as i64);
    }
}

/// `VmDestroy`, after taking dom0's window onto the VM's RAM away (so no
/// backend touches it while the hypervisor revokes it).
fn destroy_vm(id: u32) -> Result<(), Error> {
    ioreq::detach_memory(id);
    hypercall::vm_op(Function::VmDestroy, id)
}

fn sanitise_guest_text(text: &[u8], out: &mut Vec<u8>) {
    for &b in text {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => {}
            b'\t' => out.push(b),
            0..=0x1f | 0x7f => out.push(b'?'),
            _ => out.push(b),
        }
    }
}
