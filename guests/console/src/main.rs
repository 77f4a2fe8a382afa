//! Test guest `console`: the PL011 at 0x0900_0000 that dom0 emulates
//! (forwarded MMIO), as a driver sees it, and typed input through dom0's
//! console multiplexer, polled and by interrupt (SPI 1 = INTID 33, level).
//! Checks, in order:
//! - `id`: UARTPeriphID0..3, UARTPCellID0..3 (0xFE0..0xFFC) read
//!   0x11 0x10 0x14 0x00 0x0d 0xf0 0x05 0xb1;
//! - `regs`: IBRD, FBRD, LCR_H, IFLS and IMSC read back what was written
//!   (then restored); FR shows TXFE and RXFE (and not TXFF, RXFF, BUSY)
//!   while idle; CR has UARTEN and TXE; MIS stays 0 with nothing pending;
//! - `output`: a 400-character line and five numbered lines go out (the
//!   harness checks they appear prefixed with the VM's name); TXRIS is raised
//!   by transmission and UARTICR clears it;
//! - `input-poll`: prints `GUEST console: waiting for input`, then polls
//!   FR.RXFE / DR (FIFOs off, as after reset) for a line ending in CR or LF;
//!   it must be `hello-poll`;
//! - `input-irq`: FIFOs on, CR = UARTEN|TXE|RXE, IMSC = RXIM|RTIM, INTID 33
//!   enabled (level, routed to this vCPU) and IRQs on; prints `GUEST
//!   console: waiting for irq input`. The handler drains DR and clears the
//!   receive interrupts (UARTICR). The line must be `hello-irq`, at least one
//!   interrupt must have arrived, and UARTMIS must read 0 afterwards (the
//!   line is low again);
//! - `input-bye`: prints `GUEST console: waiting for bye` and polls for a
//!   line `bye`, so a harness decides when the guest finishes.
//!
//! Bootargs: `console.timeout=<seconds>` (default 60) for each input.
//! `console.flood=N` replaces all of the above with one check, `flood`: N
//! numbered lines of 72 bytes as fast as the PL011 takes them, each byte
//! written only once FR.TXFF is clear (dom0 sets TXFF while its buffer for
//! the guest is full); the check fails if TXFF stays set for 5 s. Then
//! `RESULT console: flood lines=N bytes=B txff-waits=W`. With
//! `console.reset=1` the guest then resets itself (PSCI `SYSTEM_RESET`)
//! instead of switching off: dom0 restarts it, so it floods and resets
//! again, until it is destroyed (scripts/tests/shell-busy.*).
//! Bare QEMU works too (its PL011 behaves the same), with someone typing
//! the three lines on the serial console.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    extern crate alloc;

    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

    use testkit::arch::{cpu, gic, timer};
    use testkit::hv_abi::hypercall::guest::{UART_BASE, UART_SPI};
    use testkit::{check, println, Env};

    testkit::guest!("console", main);

    // The PL011's registers and bits (Arm DDI 0183): hv-arm's, the one
    // definition dom0's emulation uses too.
    use hv_arm::pl011::reg::{CR, DR, FBRD, FR, IBRD, ICR, IFLS, IMSC, LCR_H, MIS, PERIPH_ID0, RIS};
    use hv_arm::pl011::{cr, dr, fr, int, lcr_h};
    /// LCR_H: 8 data bits, FIFOs on.
    const LCR_H_8BIT_FIFO: u32 = lcr_h::WLEN_8 | lcr_h::FEN;
    const ID_BYTES: [u32; 8] = {
        let b = hv_arm::pl011::ID_BYTES;
        [b[0] as u32, b[1] as u32, b[2] as u32, b[3] as u32, b[4] as u32, b[5] as u32, b[6] as u32, b[7] as u32]
    };
    /// The UART's INTID on QEMU virt's layout (SPI 1), if the tree names none.
    const UART_INTID: u32 = 32 + UART_SPI;
    /// Longest input line kept.
    const LINE_MAX: usize = 64;

    fn rd(reg: u64) -> u32 {
        // SAFETY: the PL011 window of the guest platform (identity-mapped
        // Device memory); a read of DR pops a received byte, which is what
        // the callers want.
        unsafe { hv_mmio::read32((UART_BASE + reg) as usize) }
    }

    fn wr(reg: u64, value: u32) {
        // SAFETY: as `rd`; the writes change only the UART's state.
        unsafe { hv_mmio::write32((UART_BASE + reg) as usize, value) }
    }

    fn id() {
        let got: Vec<u32> = (0..8).map(|i| rd(PERIPH_ID0 + 4 * i)).collect();
        let show = |v: &[u32]| v.iter().map(|b| format!("{b:#04x}")).collect::<Vec<_>>().join(" ");
        check!(
            "id",
            got == ID_BYTES,
            "0xfe0..0xffc read {} (want {})",
            show(&got),
            show(&ID_BYTES)
        );
    }

    fn regs() {
        let saved: Vec<(u64, u32)> = [IBRD, FBRD, LCR_H, IFLS, IMSC].iter().map(|&r| (r, rd(r))).collect();
        let fr = rd(FR);
        let cr = rd(CR);
        // Values that leave every interrupt masked whose raw status may be
        // set (IMSC without TXIM), so the line stays low.
        let cases: [(&str, u64, u32); 5] = [
            ("IBRD", IBRD, 0x1b),
            ("FBRD", FBRD, 0x05),
            ("LCR_H", LCR_H, 0x70),
            ("IFLS", IFLS, 0x09),
            ("IMSC", IMSC, 0x7d0),
        ];
        let mut bad = Vec::new();
        for &(name, reg, value) in &cases {
            wr(reg, value);
            let back = rd(reg);
            if back != value {
                bad.push(format!("{name} wrote {value:#x} read {back:#x}"));
            }
        }
        let mis = rd(MIS);
        for &(reg, value) in &saved {
            wr(reg, value);
        }
        if fr & (fr::TXFE | fr::RXFE) != fr::TXFE | fr::RXFE || fr & (fr::TXFF | fr::RXFF | fr::BUSY) != 0 {
            bad.push(format!("FR {fr:#x} (want TXFE|RXFE = 0x90, no TXFF, RXFF or BUSY)"));
        }
        if cr & (cr::UARTEN | cr::TXE) != cr::UARTEN | cr::TXE {
            bad.push(format!("CR {cr:#x} (want UARTEN|TXE set)"));
        }
        if mis != 0 {
            bad.push(format!("MIS {mis:#x} with IMSC 0x7d0 and nothing received (want 0)"));
        }
        if bad.is_empty() {
            let shown: Vec<String> = cases.iter().map(|(n, _, v)| format!("{n} {v:#x}")).collect();
            check!(
                "regs",
                true,
                "{} read back; FR {fr:#x} (TXFE|RXFE); CR {cr:#x}; MIS 0",
                shown.join(", ")
            );
        } else {
            check!("regs", false, "{}", bad.join("; "));
        }
    }

    fn output() {
        wr(ICR, int::TX);
        let long: String = (0..400).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let text = format!("NOTE console: long line {long} (end)");
        println!("{text}");
        for i in 1..=5 {
            println!("NOTE console: line {i} of 5");
        }
        let tx_raised = rd(RIS) & int::TX != 0;
        wr(ICR, int::TX);
        let tx_cleared = rd(RIS) & int::TX == 0;
        check!(
            "output",
            tx_raised && tx_cleared,
            "a {}-character line and 5 lines written; RIS.TXRIS {} after writing, {} after ICR",
            text.len(),
            if tx_raised { "set" } else { "CLEAR" },
            if tx_cleared { "clear" } else { "STILL SET" }
        );
    }

    /// Reads a line by polling FR.RXFE / DR: bytes up to CR or LF (empty
    /// lines skipped). `Err` with what came so far on timeout.
    fn read_line_polled(timeout_us: u64) -> Result<(String, u64), String> {
        let start = cpu::counter();
        let mut line = Vec::new();
        let mut polls = 0u64;
        let mut errors = 0u32;
        while cpu::elapsed_us(start) < timeout_us {
            polls += 1;
            if rd(FR) & fr::RXFE != 0 {
                // Each FR read is a round trip to dom0: don't flood it.
                cpu::delay_us(500);
                continue;
            }
            let dr = rd(DR);
            errors |= dr & dr::ERRORS;
            match dr as u8 {
                b'\r' | b'\n' if line.is_empty() => {}
                b'\r' | b'\n' => {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if errors != 0 {
                        return Err(format!("{text:?} with receive errors {errors:#x} in DR"));
                    }
                    return Ok((text, polls));
                }
                b if line.len() < LINE_MAX => line.push(b),
                _ => {}
            }
        }
        Err(format!(
            "timed out after {} s; got {:?} so far",
            timeout_us / 1_000_000,
            String::from_utf8_lossy(&line)
        ))
    }

    fn input_polled(check: &str, marker: &str, want: &str, timeout_us: u64) {
        println!("GUEST console: {marker} (type a line: {want})");
        let start = cpu::counter();
        match read_line_polled(timeout_us) {
            Ok((line, polls)) => check!(
                check,
                line == want,
                "read {line:?} (want {want:?}) by polling FR/DR, {polls} FR polls in {} ms",
                cpu::elapsed_us(start) / 1000
            ),
            Err(e) => check!(check, false, "{e} (want {want:?})"),
        }
    }

    // What the UART interrupt handler collected.
    static RX_BUF: [AtomicU8; LINE_MAX] = [const { AtomicU8::new(0) }; LINE_MAX];
    static RX_LEN: AtomicUsize = AtomicUsize::new(0);
    static LINE_DONE: AtomicBool = AtomicBool::new(false);
    static IRQS: AtomicU32 = AtomicU32::new(0);
    /// Interrupts taken with no receive interrupt in MIS.
    static SPURIOUS: AtomicU32 = AtomicU32::new(0);
    static RX_ERRORS: AtomicU32 = AtomicU32::new(0);

    /// The UART's handler: drains the receive FIFO, then clears the receive
    /// interrupts, and again if a byte slipped in meanwhile (UARTICR alone
    /// would otherwise hide it).
    fn on_uart(_intid: u32) {
        IRQS.fetch_add(1, Ordering::SeqCst);
        if rd(MIS) & (int::RX | int::RT) == 0 {
            SPURIOUS.fetch_add(1, Ordering::SeqCst);
        }
        loop {
            while rd(FR) & fr::RXFE == 0 {
                let dr = rd(DR);
                RX_ERRORS.fetch_or(dr & dr::ERRORS, Ordering::SeqCst);
                let len = RX_LEN.load(Ordering::SeqCst);
                match dr as u8 {
                    b'\r' | b'\n' if len == 0 => {}
                    b'\r' | b'\n' => LINE_DONE.store(true, Ordering::SeqCst),
                    _ if LINE_DONE.load(Ordering::SeqCst) => {} // after the line: ignored
                    b if len < LINE_MAX => {
                        RX_BUF[len].store(b, Ordering::SeqCst);
                        RX_LEN.store(len + 1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            wr(ICR, int::RX | int::RT);
            if rd(FR) & fr::RXFE != 0 {
                break;
            }
        }
    }

    fn input_irq(env: &'static Env, timeout_us: u64) {
        let (intid, level) = env
            .platform
            .console
            .irq
            .map_or((UART_INTID, true), |irq| (irq.intid, irq.level_triggered));
        if intid != UART_INTID || !level {
            return check!(
                "input-irq",
                false,
                "the device tree gives the UART INTID {intid} {} (want {UART_INTID}, level)",
                if level { "level" } else { "edge" }
            );
        }
        wr(IMSC, 0);
        wr(LCR_H, LCR_H_8BIT_FIFO);
        wr(CR, cr::UARTEN | cr::TXE | cr::RXE);
        wr(ICR, int::ALL);
        gic::set_handler(intid, on_uart);
        if let Err(e) = gic::enable_spi(intid, true) {
            return check!("input-irq", false, "enabling INTID {intid}: {e}");
        }
        wr(IMSC, int::RX | int::RT);
        cpu::enable_irqs();
        println!("GUEST console: waiting for irq input (type a line: hello-irq)");
        // A slow tick bounds each WFI, so the timeout is noticed.
        timer::start_periodic(50);
        let start = cpu::counter();
        while !LINE_DONE.load(Ordering::SeqCst) && cpu::elapsed_us(start) < timeout_us {
            cpu::wfi();
        }
        timer::stop();
        let ms = cpu::elapsed_us(start) / 1000;
        // Everything was read: no receive interrupt may be left.
        let mis = rd(MIS);
        let ris = rd(RIS);
        wr(IMSC, 0);
        let disabled = gic::disable_spi(intid);
        let len = RX_LEN.load(Ordering::SeqCst);
        let bytes: Vec<u8> = RX_BUF[..len].iter().map(|b| b.load(Ordering::SeqCst)).collect();
        let line = String::from_utf8_lossy(&bytes).into_owned();
        let irqs = IRQS.load(Ordering::SeqCst);
        let spurious = SPURIOUS.load(Ordering::SeqCst);
        let errors = RX_ERRORS.load(Ordering::SeqCst);
        let mut bad = Vec::new();
        if !LINE_DONE.load(Ordering::SeqCst) {
            bad.push(format!("timed out after {} s", timeout_us / 1_000_000));
        }
        if line != "hello-irq" {
            bad.push(format!("read {line:?} (want \"hello-irq\")"));
        }
        if irqs == 0 {
            bad.push(String::from("no interrupt arrived"));
        }
        if mis != 0 {
            bad.push(format!(
                "MIS {mis:#x} after reading everything (want 0: line low; RIS {ris:#x})"
            ));
        }
        if errors != 0 {
            bad.push(format!("receive errors {errors:#x} in DR"));
        }
        if let Err(e) = disabled {
            bad.push(format!("disabling INTID {intid}: {e}"));
        }
        if bad.is_empty() {
            check!(
                "input-irq",
                true,
                "read {line:?} in {irqs} interrupt(s) on INTID {intid} ({spurious} without a receive interrupt) in {ms} ms; MIS 0 afterwards"
            );
        } else {
            check!(
                "input-irq",
                false,
                "{} ({irqs} interrupt(s), {spurious} without a receive interrupt)",
                bad.join("; ")
            );
        }
    }

    /// `console.flood=N`: see the module comment.
    fn flood(lines: u64) {
        let (mut bytes, mut waits, mut stuck) = (0u64, 0u64, None);
        'lines: for n in 0..lines {
            let pattern: String = (0..57).map(|i| char::from(b'a' + ((n + i) % 26) as u8)).collect();
            let line = format!("FLOOD {n:06} {pattern}\r\n");
            for &b in line.as_bytes() {
                if rd(FR) & fr::TXFF != 0 {
                    waits += 1;
                    let start = cpu::counter();
                    while rd(FR) & fr::TXFF != 0 {
                        if cpu::elapsed_us(start) > 5_000_000 {
                            stuck = Some(n);
                            break 'lines;
                        }
                    }
                }
                wr(DR, u32::from(b));
                bytes += 1;
            }
        }
        match stuck {
            None => check!("flood", true, "{lines} lines ({bytes} bytes) written, TXFF seen {waits} time(s)"),
            Some(n) => check!("flood", false, "TXFF stayed set for 5 s at line {n} ({bytes} bytes written)"),
        }
        println!("RESULT console: flood lines={lines} bytes={bytes} txff-waits={waits}");
    }

    fn main(env: &'static Env) {
        if let Some(Ok(lines)) = env.cmdline().get_u64("console.flood") {
            flood(lines);
            if env.cmdline().get_u64("console.reset") == Some(Ok(1)) {
                testkit::rt::print_done();
                testkit::arch::psci::system_reset();
            }
            return;
        }
        let seconds = env
            .cmdline()
            .get_u64("console.timeout")
            .and_then(Result::ok)
            .unwrap_or(60)
            .clamp(1, 3600);
        let timeout_us = seconds * 1_000_000;
        id();
        regs();
        output();
        input_polled("input-poll", "waiting for input", "hello-poll", timeout_us);
        input_irq(env, timeout_us);
        input_polled("input-bye", "waiting for bye", "bye", timeout_us);
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
