//! The console shell: line editing (`line`), parsing (`command`) and the
//! commands themselves; a task of dom0's event loop (`evloop`).

use alloc::string::String;

use hv_abi::hypercall::{Function, VERSION_MAJOR, VERSION_MINOR};
use hv_devtree::platform::UartKind;

use crate::arch::aarch64::{cpu, gic, hypercall, probe, psci, smp, timer};
use crate::command::{self, Command, COMMANDS};
use crate::toolstack::{Cycle, Spawn};
use crate::wake::Wake;
use crate::{console, ioreq};
use crate::fdt_scan::Tree;
use crate::guestcon::{Focus, Input};
use crate::line::{Action, LineEditor};
use crate::{print, println};

/// The prompt the boot tests wait for.
pub const PROMPT: &str = "dom0> ";
/// Device nodes `info` lists before summarising the rest.
const MAX_DEVICES: usize = 32;

/// The shell, one task of the event loop (`evloop`): it takes the bytes
/// typed so far, and a command that takes time runs as a [`Job`], a step
/// per poll, so the loop's other tasks go on meanwhile.
pub struct Shell {
    sys: System,
    editor: LineEditor,
    /// `LogRead` cursor, kept so each `hvlog` prints only what is new.
    log_cursor: u64,
    /// The command under way; typed input waits until it is done.
    job: Option<Job>,
}

/// A command that takes time.
enum Job {
    /// `sleep`: until the counter reaches this.
    Sleep { until: u64 },
    /// `cycle N NAME`: one create/destroy round per step.
    Cycle(Cycle),
    /// `spawn N NAME`: one copy per step.
    Spawn(Spawn),
}

/// What the shell needs to know about the machine (`boot` makes it).
pub struct System {
    pub platform: hv_devtree::platform::Platform,
    pub blob: &'static [u8],
    /// The device tree has `/hypervisor` compatible "rusthv,hypervisor".
    pub hypervisor: bool,
    /// Guest VMs.
    pub vms: crate::toolstack::Toolstack,
}

impl Shell {
    pub fn new(sys: System) -> Self {
        println!("dom0 shell: type 'help' for the list of commands");
        let shell = Shell { sys, editor: LineEditor::new(), log_cursor: 0, job: None };
        shell.prompt();
        shell
    }

    /// One step: the running job's next step, or else the bytes typed so
    /// far (a command that starts a job stops there).
    pub fn poll(&mut self, now: u64) -> Wake {
        if let Some(job) = &mut self.job {
            let more = match job {
                Job::Sleep { until } => (now < *until).then_some(Wake::At(*until)),
                Job::Cycle(c) => self.sys.vms.cycle_round(c).then_some(Wake::Now),
                Job::Spawn(s) => self.sys.vms.spawn_round(s).then_some(Wake::Now),
            };
            if let Some(wake) = more {
                return wake;
            }
            self.job = None;
            self.prompt();
        }
        while let Some(byte) = console::try_read_byte() {
            let Some(line) = self.feed(byte) else { continue };
            if let Some(line) = line {
                self.execute(&line);
                if self.job.is_some() {
                    return Wake::Now;
                }
            }
            self.prompt();
        }
        Wake::Idle
    }

    /// Whether the shell waits for input (no job under way).
    pub fn reading(&self) -> bool {
        self.job.is_none()
    }

    /// What the services print guest output with: the toolstack, and the
    /// prompt and partly typed line to redraw below the output (none while
    /// a job runs).
    pub fn services_view(&mut self) -> (&mut crate::toolstack::Toolstack, &str, &str) {
        if self.job.is_some() {
            return (&mut self.sys.vms, "", "");
        }
        (&mut self.sys.vms, PROMPT, self.editor.line())
    }

    /// The prompt, unless a guest's console has the terminal.
    fn prompt(&self) {
        if self.sys.vms.mux.focus() == Focus::Dom0 {
            print!("{PROMPT}");
        }
    }

    /// One typed byte: `Some(Some(line))` a line was entered, `Some(None)`
    /// it was cancelled with Ctrl-C; `None` the line goes on.
    fn feed(&mut self, byte: u8) -> Option<Option<String>> {
        // The multiplexer decides who gets the byte.
        let byte = match self.sys.vms.mux.input(byte) {
            Input::Held => return None,
            Input::Vm(vm, bytes) => {
                if !ioreq::console_input(vm, &bytes) {
                    console::write_bytes(b"\x07");
                }
                return None;
            }
            Input::Switched(Focus::Dom0) => {
                println!("\r\n[dom0] console: back to dom0");
                print!("{PROMPT}{}", self.editor.line());
                return None;
            }
            Input::Switched(Focus::Vm(vm)) => {
                let name = self.sys.vms.mux.name(vm).unwrap_or("?");
                println!("\r\n[dom0] console: VM {vm} ({name}); Ctrl-a three times for the next console or dom0");
                return None;
            }
            // Ctrl-a typed once or twice before a key reaches the shell as typed.
            Input::Dom0(bytes) => match bytes.split_last() {
                Some((&last, held)) => {
                    held.iter().for_each(|&b| {
                        let _ = self.editor.feed(b);
                    });
                    last
                }
                None => return None,
            },
        };
        match self.editor.feed(byte) {
            Action::None => {}
            Action::Echo(c) => console::write_bytes(&[c]),
            Action::EraseOne => console::write_bytes(b"\x08 \x08"),
            Action::EraseAll(n) => (0..n).for_each(|_| console::write_bytes(b"\x08 \x08")),
            Action::Refused => console::write_bytes(b"\x07"),
            Action::Cancel => {
                println!("^C");
                return Some(None);
            }
            Action::Submit => {
                println!();
                let line = String::from(self.editor.line());
                self.editor.clear();
                return Some(Some(line));
            }
        }
        None
    }

    /// Times N round trips of each kind with the virtual counter and prints
    /// nanoseconds per operation, minus the loop's own cost. Under QEMU's
    /// `-icount shift=0` a nanosecond is one instruction, so the figures
    /// are instruction counts (scripts/bench.sh).
    fn bench(&mut self, n: u64) {
        if !self.sys.hypervisor {
            println!("bench: no hypervisor: running on bare hardware");
            return;
        }
        let freq = cpu::counter_frequency().max(1);
        let time = |f: &mut dyn FnMut()| {
            let start = cpu::counter();
            for _ in 0..n {
                f();
            }
            (cpu::counter() - start) as u128 * 1_000_000_000 / freq as u128
        };
        let baseline = time(&mut || core::hint::black_box(()));
        let per_op = |total: u128| (total.saturating_sub(baseline) / n as u128) as u64;
        let hvc = per_op(time(&mut || hypercall::null()));
        let gicd = gic::distributor_base();
        let dist = per_op(time(&mut || {
            // SAFETY: GICD_TYPER of the distributor the GIC driver owns; reading it has no side effects.
            core::hint::black_box(unsafe { crate::arch::aarch64::mmio::read32(gicd + 4) });
        }));
        println!("bench: {n} iterations each, nanoseconds per operation (= instructions under -icount shift=0)");
        println!("bench: null hypercall round trip: {hvc}");
        println!("bench: trapped GIC distributor read: {dist}");
    }

    fn execute(&mut self, line: &str) {
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                println!("{e}");
                return;
            }
        };
        match cmd {
            Command::Empty => {}
            Command::Help => help(),
            Command::Info => self.info(),
            Command::VmInfo { vm } => self.sys.vms.info(vm),
            Command::List => self.sys.vms.list(),
            Command::Create { what } => self.sys.vms.create_command(what),
            Command::Destroy { vm } => self.sys.vms.control(Function::VmDestroy, vm),
            Command::Cycle { times, name } => self.job = self.sys.vms.cycle(times, name).map(Job::Cycle),
            Command::Spawn { times, name } => self.job = self.sys.vms.spawn(times, name).map(Job::Spawn),
            Command::Unspawn => self.sys.vms.unspawn(),
            Command::Pause { vm } => self.sys.vms.control(Function::VmPause, vm),
            Command::Console { vm } => self.sys.vms.console(vm),
            Command::Log { vm } => self.sys.vms.log(vm),
            Command::Unpause { vm } => self.sys.vms.control(Function::VmUnpause, vm),
            Command::HvLog => self.hvlog(),
            Command::IoStat => iostat(),
            Command::Uptime => {
                let (s, ms) =
                    command::seconds_millis(timer::uptime_ticks(), cpu::counter_frequency());
                println!("up {s}.{ms:03} s");
            }
            Command::Sleep { micros } => {
                let freq = cpu::counter_frequency().max(1);
                let until = cpu::counter().saturating_add(command::micros_to_ticks(micros, freq));
                self.job = Some(Job::Sleep { until });
            }
            Command::Peek { addr } => match probe::read_u64(addr) {
                Ok(v) => println!("peek {addr:#x}: {v:#018x}"),
                Err(a) => println!(
                    "peek {addr:#x}: data abort (ESR {:#x}, FAR {:#x})",
                    a.esr, a.far
                ),
            },
            Command::Bench { iterations } => self.bench(iterations),
            Command::Disk { op } => {
                // The IO event handler (this CPU) serves guests' disks from
                // the same disk: keep it out while the shell holds the disk.
                cpu::mask_irqs();
                crate::drivers::disk::shell_command(op);
                cpu::unmask_irqs();
            }
            // The board's own reset, where it has one (the Raspberry Pi's
            // power-management watchdog): the PSCI dom0 sees is the
            // hypervisor's, which can only reset through firmware PSCI,
            // and the Pi 4's stock firmware has none.
            Command::Reboot if crate::drivers::pm_reset::find(self.sys.blob).is_some() => {
                if let Some(base) = crate::drivers::pm_reset::find(self.sys.blob) {
                    println!("rebooting (power-management watchdog)");
                    console::flush();
                    crate::drivers::pm_reset::reset(base);
                    println!("reboot: the watchdog did not reset the machine");
                }
            }
            Command::Poweroff | Command::Reboot if !psci::available() => {
                println!("no PSCI in the device tree: cannot power off or reset this machine");
            }
            Command::Poweroff => {
                println!("powering off");
                console::flush();
                if let Err(e) = psci::system_off() {
                    println!("poweroff: PSCI SYSTEM_OFF failed: {e:?}");
                }
            }
            Command::Reboot => {
                println!("rebooting");
                console::flush();
                if let Err(e) = psci::system_reset() {
                    println!("reboot: PSCI SYSTEM_RESET failed: {e:?}");
                }
            }
        }
    }

    fn info(&self) {
        let p = &self.sys.platform;
        println!("model: {}", p.model);
        for r in &p.memory {
            let end = r.base.as_u64().saturating_add(r.size);
            println!(
                "memory: {:#x}-{:#x} ({} MiB)",
                r.base.as_u64(),
                end,
                r.size >> 20
            );
        }
        println!("memory total: {} MiB", p.ram_size() >> 20);
        println!(
            "cpus: {} online, {} in device tree",
            smp::online(),
            p.cpus.len()
        );
        let (version, gicd, other, region) = gic::describe(&p.gic);
        match region {
            Some(r) => println!(
                "gic: {version}, gicd {gicd:#x}, {other} {:#x}",
                r.base.as_u64()
            ),
            None => println!("gic: {version}, gicd {gicd:#x}"),
        }
        let kind = match p.console.kind {
            UartKind::Pl011 => "pl011",
            UartKind::Bcm2835Aux => "bcm2835-aux",
        };
        match p.console.irq {
            Some(irq) => println!(
                "console: {kind} at {:#x}, irq {}",
                p.console.base.as_u64(),
                irq.intid
            ),
            None => println!(
                "console: {kind} at {:#x}, no irq (polled)",
                p.console.base.as_u64()
            ),
        }
        println!(
            "timer: {} Hz, virtual timer irq {}",
            cpu::counter_frequency(),
            timer::intid()
        );
        if self.sys.hypervisor {
            match hypercall::version() {
                Ok(v) => println!(
                    "hypervisor: present, ABI {}.{} (dom0 built for {VERSION_MAJOR}.{VERSION_MINOR})",
                    v >> 16,
                    v & 0xffff
                ),
                Err(e) => println!("hypervisor: present, Version failed: {}", e.description()),
            }
        } else {
            println!("hypervisor: none (running on bare hardware)");
        }
        let devices = Tree::new(self.sys.blob).devices();
        println!("devices: {} nodes with reg", devices.len());
        for d in devices.iter().take(MAX_DEVICES) {
            match d.base {
                Some(base) => println!("  {} {base:#x} size {:#x}", d.path, d.size),
                None => println!("  {} untranslatable", d.path),
            }
        }
        if devices.len() > MAX_DEVICES {
            println!("  ... {} more not shown", devices.len() - MAX_DEVICES);
        }
        let (unhandled, dropped) = (gic::unhandled(), console::rx_dropped());
        if unhandled != 0 || dropped != 0 {
            println!("warnings: {unhandled} unhandled interrupts, {dropped} input bytes dropped");
        }
    }

    fn hvlog(&mut self) {
        if !self.sys.hypervisor {
            println!("no hypervisor: running on bare hardware");
            return;
        }
        let mut buf = [0u8; 512];
        let mut total = 0usize;
        let mut last = b'\n';
        loop {
            let chunk = match hypercall::log_read(&mut buf, self.log_cursor) {
                Ok(c) => c,
                Err(e) => {
                    println!("hvlog: LogRead failed: {}", e.description());
                    return;
                }
            };
            if chunk.lost != 0 {
                println!(
                    "hvlog: {} bytes lost (overwritten before they were read)",
                    chunk.lost
                );
            }
            self.log_cursor = chunk.next_cursor;
            if chunk.copied == 0 {
                break;
            }
            let text = &buf[..chunk.copied];
            total += text.len();
            last = text[text.len() - 1];
            for piece in text.split_inclusive(|&b| b == b'\n') {
                match piece.split_last() {
                    Some((b'\n', body)) => {
                        console::write_bytes(body);
                        console::write_bytes(b"\r\n");
                    }
                    _ => console::write_bytes(piece),
                }
            }
        }
        if last != b'\n' {
            println!();
        }
        if total == 0 {
            println!("hvlog: no new log text");
        }
    }
}

fn iostat() {
    match ioreq::status() {
        None => println!("iostat: IO forwarding is off"),
        Some(s) => {
            println!(
                "IO forwarding: {} requests handled, {} errors ({} malformed), {} events",
                s.stats.handled, s.stats.errors, s.stats.malformed, s.events
            );
            let [copy, irq, complete, shadow] = s.calls;
            println!(
                "  backend hypercalls: {copy} VmCopy, {irq} IrqLine, {complete} IoComplete; {} virtio-blk requests; {shadow} IoShadow",
                s.stats.blk_requests
            );
            if s.stats.output_dropped > 0 || s.stats.input_dropped > 0 {
                println!("  guest consoles: {} output bytes dropped, {} typed bytes dropped", s.stats.output_dropped, s.stats.input_dropped);
            }
            if s.stats.frames_switched > 0 || s.stats.frames_dropped > 0 {
                println!("  virtual switch: {} frames switched, {} dropped", s.stats.frames_switched, s.stats.frames_dropped);
            }
            if s.stats.disk_turns > 0 {
                println!(
                    "  disk turns: {} taken by the IO worker ({} dropped: VM gone); {} accesses waited for their disk, {} refused (too many waiting)",
                    s.stats.disk_turns, s.stats.disk_turns_dropped, s.stats.deferred, s.stats.deferred_refused
                );
            }
            if s.long_events > 0 {
                println!("  {} events handed the CPU back after {} us with requests still coming", s.long_events, ioreq::HANDLER_MAX_MICROS);
            }
            if s.irq_failed > 0 {
                println!("  {} IrqLine calls refused by the hypervisor", s.irq_failed);
            }
            if s.delayed > 0 {
                println!("  {} completions waited for room in the completion ring", s.delayed);
            }
            if s.corrupt {
                println!("  stopped: the hypervisor wrote impossible ring indices");
            }
        }
    }
}

fn help() {
    println!("commands:");
    for (name, usage, desc) in COMMANDS {
        let left = if usage.is_empty() {
            String::from(*name)
        } else {
            alloc::format!("{name} {usage}")
        };
        println!("  {left:<16} {desc}");
    }
}
