//! An emulated Arm PrimeCell UART (PL011) for a guest: register state, FIFOs and interrupt line, driven by forwarded MMIO accesses.
//!
//! Register layout and behaviour follow the *PrimeCell UART (PL011) Technical
//! Reference Manual* (Arm DDI 0183), chapter 3 "Programmers Model". The model
//! is pure state: the caller feeds it guest accesses ([`Pl011::read`],
//! [`Pl011::write`]) and received bytes ([`Pl011::push_rx`]), prints what
//! [`WriteEffect::transmitted`] carries and drives the guest's interrupt line
//! from [`Pl011::irq_level`].
//!
//! Simplifications, chosen to match QEMU's PL011 (which Linux's
//! `amba-pl011` driver and `earlycon=pl011` are known to work against):
//! - Transmission is instant while the line can take bytes: the transmit
//!   FIFO is empty, `BUSY` and `TXFF` clear. The line is dom0's buffer for
//!   the guest's output; when it is full the caller says so with
//!   [`Pl011::set_tx_blocked`], and until it is unblocked `UARTFR` reads
//!   `TXFF` and `BUSY` (not `TXFE`), as a FIFO waiting for a slow line
//!   would. The hypervisor may answer `UARTFR` reads with a value dom0
//!   published earlier ([`Pl011::flags`], `IoShadow`), so a guest can see
//!   "not full" for a moment after the line blocked: up to [`TX_GRACE`]
//!   bytes written after the block still go out (counted in
//!   [`Pl011Stats::tx_after_full`]). A guest that writes `UARTDR` beyond
//!   that loses the byte, as on the hardware; it is counted in
//!   [`Pl011Stats::tx_overrun`]. A byte written
//!   to `UARTDR` goes out even while `UARTEN`/`TXE` are clear (earlycon
//!   writes to the UART as reset left it; QEMU does the same); such bytes
//!   are counted in [`Pl011Stats::tx_while_disabled`].
//! - `TXRIS` is raised whenever the transmit FIFO falls to its trigger level,
//!   which with instant transmission means on every `UARTDR` write, when
//!   the transmitter is switched on (`UARTEN` and `TXE` both set) and when
//!   a blocked line is unblocked (not while it is blocked). It stays
//!   set, as in QEMU, until the guest clears it through `UARTICR`.
//! - `RXRIS` and `RTRIS` are re-evaluated whenever the receive FIFO or its
//!   trigger level changes: `RXRIS` when the FIFO holds at least the trigger
//!   level, `RTRIS` (receive timeout) when it holds data below the trigger
//!   level. Writing `UARTICR` clears them until the next such change.
//! - Reception honours the enables: a byte arrives only while `UARTEN` and
//!   `RXE` are set (TRM 3.3.8), and only if the FIFO has room; otherwise it is
//!   dropped and counted. A drop because of a full FIFO sets `OE` in
//!   `UARTRSR`.
//! - No errors, breaks, modem lines, IrDA or DMA: those status and interrupt
//!   bits read as zero; the control bits are stored and read back.
#![forbid(unsafe_code)]

/// The register map, the bits and the identification bytes are the
/// PL011's one definition, shared with the console driver and the guests.
pub use hv_arm::pl011::{cr, fr, int, lcr_h, reg, rsr, FIFO_DEPTH, ID_BYTES};

/// Bytes a blocked line still takes: what a guest may write on flag reads
/// answered from a value published before the block. Dom0 publishes the
/// new flags as it blocks the line, so those are the posted writes
/// already in the request ring (64 at most) and, per vCPU, one transmit
/// FIFO's worth (32 bytes, 8 vCPUs) that a driver fills on one look at
/// `UARTFR` or its transmit interrupt.
pub const TX_GRACE: u32 = 64 + 8 * 32;

/// `UARTIFLS` value after reset: both trigger levels at half full.
const IFLS_RESET: u32 = 0x12;

/// A guest access the device cannot answer. The caller decides what the
/// guest sees (for example a data abort, or read-as-zero / write-ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pl011Error {
    /// Access size other than 1, 2 or 4 bytes.
    BadSize(u8),
    /// Offset not a multiple of the access size.
    Misaligned { offset: u64, size: u8 },
    /// No register at this offset (reserved, test registers, or outside the frame).
    NoRegister(u64),
}

impl core::fmt::Display for Pl011Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::BadSize(size) => write!(f, "pl011: {size}-byte access not supported"),
            Self::Misaligned { offset, size } => {
                write!(f, "pl011: {size}-byte access at {offset:#x} is misaligned")
            }
            Self::NoRegister(offset) => write!(f, "pl011: no register at {offset:#x}"),
        }
    }
}

/// What a guest write did beyond changing register state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteEffect {
    /// A byte went out on the line: the caller prints it.
    pub transmitted: Option<u8>,
    /// [`Pl011::irq_level`] differs from before the write.
    pub irq_changed: bool,
}

/// Counters for what the model refused or let through unusually.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pl011Stats {
    /// Bytes transmitted (excluding loopback).
    pub tx_bytes: u64,
    /// Of those, bytes written while `UARTEN` or `TXE` was clear.
    pub tx_while_disabled: u64,
    /// Received bytes dropped because the receive FIFO was full (overrun).
    pub rx_dropped_full: u64,
    /// Received bytes dropped because `UARTEN` or `RXE` was clear.
    pub rx_dropped_disabled: u64,
    /// Bytes the guest wrote to `UARTDR` while `UARTFR` said `TXFF`, beyond
    /// [`TX_GRACE`]: lost.
    pub tx_overrun: u64,
    /// Bytes the line took while blocked, within [`TX_GRACE`].
    pub tx_after_full: u64,
}

/// One guest's PL011.
#[derive(Debug, Clone)]
pub struct Pl011 {
    rx_fifo: [u8; FIFO_DEPTH],
    /// Index of the oldest byte in `rx_fifo`.
    rx_head: usize,
    rx_count: usize,
    rsr: u32,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    ris: u32,
    dmacr: u32,
    /// The line takes no bytes now (dom0's buffer is full).
    tx_blocked: bool,
    /// Bytes the blocked line still takes ([`TX_GRACE`]).
    tx_grace: u32,
    stats: Pl011Stats,
}

impl Default for Pl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pl011 {
    /// A PL011 in its reset state (TRM 3.2, table 3-1 reset values).
    pub const fn new() -> Self {
        Self {
            rx_fifo: [0; FIFO_DEPTH],
            rx_head: 0,
            rx_count: 0,
            rsr: 0,
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: cr::RESET,
            ifls: IFLS_RESET,
            imsc: 0,
            ris: 0,
            dmacr: 0,
            tx_blocked: false,
            tx_grace: 0,
            stats: Pl011Stats {
                tx_bytes: 0,
                tx_while_disabled: 0,
                rx_dropped_full: 0,
                rx_dropped_disabled: 0,
                tx_overrun: 0,
                tx_after_full: 0,
            },
        }
    }

    /// Returns the device to its reset state (statistics are kept, and
    /// whether the line is blocked, which is not the device's state).
    pub fn reset(&mut self) {
        let (stats, blocked) = (self.stats, self.tx_blocked);
        *self = Self::new();
        self.stats = stats;
        self.tx_blocked = blocked;
    }

    /// The line behind the transmitter stops (`true`) or resumes taking
    /// bytes. Resuming empties the transmit FIFO at once, so `TXRIS` is
    /// raised (with the transmitter enabled): a driver waiting for the
    /// transmit interrupt goes on. Returns whether [`irq_level`](Self::irq_level)
    /// changed.
    pub fn set_tx_blocked(&mut self, blocked: bool) -> bool {
        let before = self.irq_level();
        if self.tx_blocked && !blocked && self.tx_enabled() {
            self.ris |= int::TX;
        }
        if blocked && !self.tx_blocked {
            self.tx_grace = TX_GRACE;
        }
        self.tx_blocked = blocked;
        self.irq_level() != before
    }

    /// Whether the line is blocked ([`set_tx_blocked`](Self::set_tx_blocked)).
    pub fn tx_blocked(&self) -> bool {
        self.tx_blocked
    }

    /// The level of the combined interrupt line `UARTINTR`: any unmasked
    /// interrupt pending (`UARTMIS != 0`).
    pub fn irq_level(&self) -> bool {
        self.mis() != 0
    }

    /// Counters of dropped and unusual traffic.
    pub fn stats(&self) -> Pl011Stats {
        self.stats
    }

    /// Whether [`push_rx`](Self::push_rx) would accept a byte now: receiver
    /// enabled and room in the FIFO. Lets the caller hold input back instead
    /// of dropping it.
    pub fn can_receive(&self) -> bool {
        self.rx_enabled() && self.rx_count < self.depth()
    }

    /// A byte arrives on the line. Returns `false` if it was dropped (receiver
    /// disabled, or FIFO full: overrun); drops are counted in [`stats`](Self::stats).
    /// Check [`irq_level`](Self::irq_level) afterwards.
    pub fn push_rx(&mut self, byte: u8) -> bool {
        if !self.rx_enabled() {
            self.stats.rx_dropped_disabled += 1;
            return false;
        }
        if self.rx_count >= self.depth() {
            self.stats.rx_dropped_full += 1;
            self.rsr |= rsr::OE;
            return false;
        }
        let slot = (self.rx_head + self.rx_count) % FIFO_DEPTH;
        self.rx_fifo[slot] = byte;
        self.rx_count += 1;
        self.update_rx_interrupts();
        true
    }

    /// A guest read of `size` bytes (1, 2 or 4) at `offset` in the frame. A
    /// narrow read returns those bytes of the 32-bit register. Reading
    /// `UARTDR` pops the receive FIFO, so check [`irq_level`](Self::irq_level)
    /// afterwards.
    pub fn read(&mut self, offset: u64, size: u8) -> Result<u32, Pl011Error> {
        let (word, shift, mask) = check_access(offset, size)?;
        let value = match word {
            reg::DR => self.pop_rx(),
            reg::RSR_ECR => self.rsr,
            reg::FR => self.fr(),
            reg::ILPR => self.ilpr,
            reg::IBRD => self.ibrd,
            reg::FBRD => self.fbrd,
            reg::LCR_H => self.lcr_h,
            reg::CR => self.cr,
            reg::IFLS => self.ifls,
            reg::IMSC => self.imsc,
            reg::RIS => self.ris,
            reg::MIS => self.mis(),
            // Write-only.
            reg::ICR => 0,
            reg::DMACR => self.dmacr,
            id if (reg::PERIPH_ID0..reg::FRAME_SIZE).contains(&id) => {
                // `check_access` accepted it, so the index is 0..8.
                let index = ((id - reg::PERIPH_ID0) / 4) as usize;
                u32::from(ID_BYTES.get(index).copied().unwrap_or(0))
            }
            other => return Err(Pl011Error::NoRegister(other)),
        };
        Ok((value >> shift) & mask)
    }

    /// A guest write of `size` bytes (1, 2 or 4) at `offset` in the frame. A
    /// narrow write to the low bytes of a register zero-extends; one to its
    /// upper bytes merges with the current value (and, for `UARTDR`, sends
    /// nothing, as the data bits are not written). Writes to read-only
    /// registers are ignored.
    pub fn write(&mut self, offset: u64, size: u8, value: u32) -> Result<WriteEffect, Pl011Error> {
        let (word, shift, mask) = check_access(offset, size)?;
        let irq_before = self.irq_level();
        // The value the register takes: a write reaching bit 0 zero-extends,
        // one to upper bytes keeps the bytes not written. Registers whose
        // write is an action (`UARTICR`) merge with zero.
        let merge = |old: u32| {
            let kept = if shift == 0 {
                0
            } else {
                old & !(mask << shift)
            };
            kept | ((value & mask) << shift)
        };
        let mut transmitted = None;
        match word {
            reg::DR => {
                if shift == 0 {
                    transmitted = self.transmit(value as u8);
                }
            }
            // Any write clears the error flags (TRM 3.3.2).
            reg::RSR_ECR => self.rsr = 0,
            reg::FR | reg::RIS | reg::MIS => {}
            reg::ILPR => self.ilpr = merge(self.ilpr) & 0xff,
            reg::IBRD => self.ibrd = merge(self.ibrd) & 0xffff,
            reg::FBRD => self.fbrd = merge(self.fbrd) & 0x3f,
            reg::LCR_H => {
                let new = merge(self.lcr_h) & 0xff;
                if (new ^ self.lcr_h) & lcr_h::FEN != 0 {
                    // Switching FIFOs on or off flushes them (as QEMU does).
                    self.rx_head = 0;
                    self.rx_count = 0;
                }
                self.lcr_h = new;
                self.update_rx_interrupts();
            }
            reg::CR => {
                let was_tx_enabled = self.tx_enabled();
                // Bits 6:3 are reserved (TRM 3.3.8).
                self.cr = merge(self.cr) & 0xff87;
                if self.tx_enabled() && !was_tx_enabled {
                    // The empty transmit FIFO is at/below any trigger level.
                    self.ris |= int::TX;
                }
            }
            reg::IFLS => {
                self.ifls = merge(self.ifls) & 0x3f;
                self.update_rx_interrupts();
            }
            reg::IMSC => self.imsc = merge(self.imsc) & int::ALL,
            reg::ICR => self.ris &= !(merge(0) & int::ALL),
            reg::DMACR => self.dmacr = merge(self.dmacr) & 0x7,
            id if (reg::PERIPH_ID0..reg::FRAME_SIZE).contains(&id) => {}
            other => return Err(Pl011Error::NoRegister(other)),
        }
        Ok(WriteEffect {
            transmitted,
            irq_changed: self.irq_level() != irq_before,
        })
    }

    fn depth(&self) -> usize {
        if self.lcr_h & lcr_h::FEN != 0 {
            FIFO_DEPTH
        } else {
            1
        }
    }

    /// Whether the guest has the receiver on (`UARTEN` and `RXE`).
    pub fn rx_enabled(&self) -> bool {
        self.cr & (cr::UARTEN | cr::RXE) == cr::UARTEN | cr::RXE
    }

    fn tx_enabled(&self) -> bool {
        self.cr & (cr::UARTEN | cr::TXE) == cr::UARTEN | cr::TXE
    }

    /// Receive FIFO level at which `RXRIS` is raised (TRM 3.3.9): 1/8, 1/4,
    /// 1/2, 3/4 or 7/8 of 16; reserved encodings act as 1/2. One character
    /// when FIFOs are off.
    fn rx_trigger(&self) -> usize {
        if self.lcr_h & lcr_h::FEN == 0 {
            return 1;
        }
        match (self.ifls >> 3) & 0x7 {
            0 => 2,
            1 => 4,
            3 => 12,
            4 => 14,
            _ => 8,
        }
    }

    /// `UARTFR` as a read would return it now.
    pub fn flags(&self) -> u32 {
        self.fr()
    }

    /// The registers whose writes leave [`flags`](Self::flags) as it is,
    /// bit i for offset 4i (the mask `IoShadow` takes): all but `UARTLCR_H`
    /// (its `FEN` sets the receive FIFO's depth and flushes it) and
    /// `UARTCR` (loopback), and `UARTDR` only outside loopback (there a
    /// write fills the receiver). A blocked line changes the flags too,
    /// but dom0 does that itself (and publishes).
    pub fn flags_keep_mask(&self) -> u64 {
        let all_below_dmacr = (1u64 << (reg::DMACR / 4 + 1)) - 1;
        let mut keep = all_below_dmacr & !(1 << (reg::LCR_H / 4)) & !(1 << (reg::CR / 4));
        if self.cr & cr::LBE != 0 {
            keep &= !(1 << (reg::DR / 4));
        }
        keep
    }

    fn fr(&self) -> u32 {
        let mut fr = if self.tx_blocked { fr::TXFF | fr::BUSY } else { fr::TXFE };
        if self.rx_count == 0 {
            fr |= fr::RXFE;
        }
        if self.rx_count >= self.depth() {
            fr |= fr::RXFF;
        }
        fr
    }

    fn mis(&self) -> u32 {
        self.ris & self.imsc
    }

    fn update_rx_interrupts(&mut self) {
        self.ris &= !(int::RX | int::RT);
        if self.rx_count >= self.rx_trigger() {
            self.ris |= int::RX;
        } else if self.rx_count > 0 {
            self.ris |= int::RT;
        }
    }

    /// Pops the oldest received byte; 0 if the FIFO is empty. No receive
    /// errors are modelled, so bits 11:8 are always clear.
    fn pop_rx(&mut self) -> u32 {
        if self.rx_count == 0 {
            return 0;
        }
        let byte = self.rx_fifo[self.rx_head];
        self.rx_head = (self.rx_head + 1) % FIFO_DEPTH;
        self.rx_count -= 1;
        self.update_rx_interrupts();
        u32::from(byte)
    }

    fn transmit(&mut self, byte: u8) -> Option<u8> {
        let enabled = self.tx_enabled();
        let full = self.tx_blocked && self.cr & cr::LBE == 0;
        if full {
            if self.tx_grace == 0 {
                // The FIFO is full (`TXFF`): the byte is lost.
                self.stats.tx_overrun += 1;
                return None;
            }
            self.tx_grace -= 1;
            self.stats.tx_after_full += 1;
        }
        if enabled && !full {
            self.ris |= int::TX;
        }
        if self.cr & cr::LBE != 0 {
            // Loopback: the byte goes to our own receiver, not the line.
            self.push_rx(byte);
            return None;
        }
        self.stats.tx_bytes += 1;
        if !enabled {
            self.stats.tx_while_disabled += 1;
        }
        Some(byte)
    }
}

/// Validates an access; returns the 32-bit register's offset, the bit shift
/// of the accessed bytes within it and the mask of the accessed width.
fn check_access(offset: u64, size: u8) -> Result<(u64, u32, u32), Pl011Error> {
    let mask = match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => return Err(Pl011Error::BadSize(size)),
    };
    if !offset.is_multiple_of(u64::from(size)) {
        return Err(Pl011Error::Misaligned { offset, size });
    }
    let word = offset & !3;
    let exists = word <= reg::DMACR && !(0x008..reg::FR).contains(&word) && word != 0x01c
        || (reg::PERIPH_ID0..reg::FRAME_SIZE).contains(&word);
    if !exists {
        return Err(Pl011Error::NoRegister(offset));
    }
    Ok((word, ((offset & 3) * 8) as u32, mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(uart: &mut Pl011, offset: u64, value: u32) -> WriteEffect {
        uart.write(offset, 4, value).unwrap()
    }

    fn r(uart: &mut Pl011, offset: u64) -> u32 {
        uart.read(offset, 4).unwrap()
    }

    /// A UART as Linux leaves it after `pl011_startup`: 8N1 with FIFOs,
    /// trigger levels at half, enabled.
    fn enabled_with_fifos() -> Pl011 {
        let mut uart = Pl011::new();
        w(&mut uart, reg::LCR_H, 0x60 | lcr_h::FEN);
        w(&mut uart, reg::CR, cr::UARTEN | cr::TXE | cr::RXE);
        uart
    }

    #[test]
    fn reset_values_match_the_trm() {
        let mut uart = Pl011::new();
        assert_eq!(r(&mut uart, reg::CR), 0x300);
        assert_eq!(r(&mut uart, reg::IFLS), 0x12);
        assert_eq!(r(&mut uart, reg::FR), fr::TXFE | fr::RXFE);
        for offset in [
            reg::RSR_ECR,
            reg::ILPR,
            reg::IBRD,
            reg::FBRD,
            reg::LCR_H,
            reg::IMSC,
            reg::RIS,
            reg::MIS,
            reg::DMACR,
        ] {
            assert_eq!(r(&mut uart, offset), 0, "offset {offset:#x}");
        }
        assert!(!uart.irq_level());
    }

    #[test]
    fn reset_restores_registers_and_empties_the_fifo_but_keeps_stats() {
        let mut uart = enabled_with_fifos();
        w(&mut uart, reg::IMSC, int::ALL);
        uart.push_rx(b'x');
        w(&mut uart, reg::DR, b'y'.into());
        assert!(uart.irq_level());
        uart.reset();
        assert!(!uart.irq_level());
        assert_eq!(r(&mut uart, reg::FR), fr::TXFE | fr::RXFE);
        assert_eq!(r(&mut uart, reg::CR), cr::RESET);
        assert_eq!(uart.stats().tx_bytes, 1);
    }

    #[test]
    fn data_register_write_transmits_the_low_byte() {
        let mut uart = enabled_with_fifos();
        let effect = w(&mut uart, reg::DR, 0xabcd_0041);
        assert_eq!(effect.transmitted, Some(b'A'));
        assert_eq!(
            uart.write(reg::DR, 1, u32::from(b'b')).unwrap().transmitted,
            Some(b'b')
        );
        assert_eq!(
            uart.write(reg::DR, 2, u32::from(b'c')).unwrap().transmitted,
            Some(b'c')
        );
        assert_eq!(uart.stats().tx_bytes, 3);
        assert_eq!(uart.stats().tx_while_disabled, 0);
        // Transmission is instant: never busy, never full.
        assert_eq!(
            r(&mut uart, reg::FR) & (fr::BUSY | fr::TXFF | fr::TXFE),
            fr::TXFE
        );
    }

    #[test]
    fn a_blocked_line_shows_a_full_fifo_and_its_end_raises_the_tx_interrupt() {
        let mut uart = enabled_with_fifos();
        w(&mut uart, reg::IMSC, int::TX);
        w(&mut uart, reg::ICR, int::ALL);
        assert!(!uart.irq_level());
        assert!(!uart.set_tx_blocked(true), "blocking raises nothing");
        assert_eq!(r(&mut uart, reg::FR) & (fr::TXFF | fr::TXFE | fr::BUSY), fr::TXFF | fr::BUSY);
        // Bytes written on a stale "not full" go out, up to TX_GRACE,
        // without a TX interrupt; a driver that ignores TXFF beyond that
        // loses the byte, counted.
        for _ in 0..TX_GRACE {
            assert_eq!(w(&mut uart, reg::DR, b'g'.into()).transmitted, Some(b'g'));
        }
        assert_eq!(uart.stats().tx_after_full, u64::from(TX_GRACE));
        assert_eq!(w(&mut uart, reg::DR, b'x'.into()).transmitted, None);
        assert_eq!(uart.stats().tx_overrun, 1);
        assert!(!uart.irq_level());
        assert!(uart.set_tx_blocked(false), "room again: TXRIS, the line rises");
        assert_eq!(r(&mut uart, reg::FR) & (fr::TXFF | fr::TXFE | fr::BUSY), fr::TXFE);
        assert_eq!(r(&mut uart, reg::RIS) & int::TX, int::TX);
        assert_eq!(w(&mut uart, reg::DR, b'y'.into()).transmitted, Some(b'y'));
        // The next block has its grace again.
        uart.set_tx_blocked(true);
        assert_eq!(w(&mut uart, reg::DR, b'z'.into()).transmitted, Some(b'z'));
        uart.set_tx_blocked(false);
        // A reset does not unblock a blocked line (dom0's buffer is still full).
        uart.set_tx_blocked(true);
        uart.reset();
        assert!(uart.tx_blocked());
        assert_eq!(r(&mut uart, reg::FR) & fr::TXFF, fr::TXFF);
    }

    /// What `IoShadow` relies on: a write to a register the keep mask
    /// names never changes `UARTFR`, whatever the state and the value.
    #[test]
    fn writes_the_keep_mask_names_leave_the_flags_alone() {
        let states: [fn() -> Pl011; 4] = [
            Pl011::new,
            enabled_with_fifos,
            || {
                let mut u = enabled_with_fifos();
                for b in 0..5 {
                    u.push_rx(b);
                }
                u
            },
            || {
                let mut u = enabled_with_fifos();
                u.set_tx_blocked(true);
                u.push_rx(1);
                u
            },
        ];
        let mut kept = 0;
        for make in states {
            for loopback in [false, true] {
                let mut base = make();
                if loopback {
                    let cr = r(&mut base, reg::CR);
                    w(&mut base, reg::CR, cr | cr::LBE);
                }
                let mask = base.flags_keep_mask();
                for offset in (0..=reg::DMACR).step_by(4).filter(|o| mask & 1 << (o / 4) != 0) {
                    for value in [0, 0x41, 0xffff_ffff, lcr_h::FEN, cr::LBE] {
                        let mut uart = base.clone();
                        let before = uart.flags();
                        let _ = uart.write(offset, 4, value);
                        assert_eq!(uart.flags(), before, "write {value:#x} at {offset:#x} (loopback {loopback})");
                        kept += 1;
                    }
                }
                assert_eq!(mask & 1 << (reg::DR / 4) != 0, !loopback);
            }
        }
        assert!(kept > 50);
        // The two registers that do change them are left out.
        let mut uart = enabled_with_fifos();
        uart.push_rx(1);
        let mask = uart.flags_keep_mask();
        assert_eq!(mask & (1 << (reg::LCR_H / 4) | 1 << (reg::CR / 4)), 0);
        let before = uart.flags();
        w(&mut uart, reg::LCR_H, 0);
        assert_ne!(uart.flags(), before, "FEN off flushes the receive FIFO");
    }

    #[test]
    fn write_to_upper_bytes_of_data_register_sends_nothing() {
        let mut uart = enabled_with_fifos();
        assert_eq!(uart.write(reg::DR + 1, 1, 0x41).unwrap().transmitted, None);
        assert_eq!(uart.write(reg::DR + 2, 2, 0x41).unwrap().transmitted, None);
        assert_eq!(uart.stats().tx_bytes, 0);
    }

    #[test]
    fn earlycon_output_goes_out_before_the_uart_is_enabled() {
        let mut uart = Pl011::new();
        // earlycon: poll TXFF, write DR, poll BUSY, with the reset CR.
        for &byte in b"Booting" {
            assert_eq!(r(&mut uart, reg::FR) & fr::TXFF, 0);
            assert_eq!(
                uart.write(reg::DR, 4, byte.into()).unwrap().transmitted,
                Some(byte)
            );
            assert_eq!(r(&mut uart, reg::FR) & fr::BUSY, 0);
        }
        assert_eq!(uart.stats().tx_while_disabled, 7);
        // No transmit interrupt while the transmitter is off.
        assert_eq!(r(&mut uart, reg::RIS) & int::TX, 0);
    }

    #[test]
    fn loopback_sends_transmitted_bytes_to_the_receiver() {
        let mut uart = enabled_with_fifos();
        w(&mut uart, reg::CR, cr::UARTEN | cr::TXE | cr::RXE | cr::LBE);
        assert_eq!(w(&mut uart, reg::DR, b'L'.into()).transmitted, None);
        assert_eq!(r(&mut uart, reg::DR), u32::from(b'L'));
        // With the receiver off, the looped byte is lost, not received.
        w(&mut uart, reg::CR, cr::UARTEN | cr::TXE | cr::LBE);
        w(&mut uart, reg::DR, 0);
        assert_ne!(r(&mut uart, reg::FR) & fr::RXFE, 0);
        assert_eq!(uart.stats().tx_bytes, 0);
    }

    #[test]
    fn fifo_depth_is_sixteen_with_fen_and_one_without() {
        let mut uart = Pl011::new();
        w(&mut uart, reg::CR, cr::UARTEN | cr::RXE);
        assert!(uart.push_rx(1));
        assert_eq!(r(&mut uart, reg::FR) & (fr::RXFF | fr::RXFE), fr::RXFF);
        assert!(!uart.can_receive());
        assert!(!uart.push_rx(2), "holding register already full");
        assert_eq!(uart.stats().rx_dropped_full, 1);
        assert_eq!(r(&mut uart, reg::RSR_ECR), rsr::OE);
        w(&mut uart, reg::RSR_ECR, 0);
        assert_eq!(r(&mut uart, reg::RSR_ECR), 0);
        assert_eq!(r(&mut uart, reg::DR), 1);

        w(&mut uart, reg::LCR_H, lcr_h::FEN);
        for i in 0..FIFO_DEPTH as u8 {
            assert_eq!(r(&mut uart, reg::FR) & fr::RXFF, 0);
            assert!(uart.push_rx(i), "byte {i}");
        }
        assert_eq!(r(&mut uart, reg::FR) & (fr::RXFF | fr::RXFE), fr::RXFF);
        assert!(!uart.push_rx(0xff));
        assert_eq!(uart.stats().rx_dropped_full, 2);
        for i in 0..FIFO_DEPTH as u32 {
            assert_eq!(r(&mut uart, reg::DR), i, "bytes come out in order");
        }
        assert_eq!(r(&mut uart, reg::FR) & (fr::RXFF | fr::RXFE), fr::RXFE);
    }

    #[test]
    fn switching_fifos_on_or_off_flushes_the_receive_fifo() {
        let mut uart = enabled_with_fifos();
        uart.push_rx(b'a');
        uart.push_rx(b'b');
        w(&mut uart, reg::LCR_H, 0x60);
        assert_ne!(r(&mut uart, reg::FR) & fr::RXFE, 0);
        uart.push_rx(b'c');
        // Rewriting the same FEN value keeps the data (Linux's set_termios does this).
        w(&mut uart, reg::LCR_H, 0x70 & !lcr_h::FEN);
        assert_eq!(r(&mut uart, reg::DR), u32::from(b'c'));
    }

    #[test]
    fn reading_an_empty_fifo_returns_zero_and_changes_nothing() {
        let mut uart = enabled_with_fifos();
        assert_eq!(r(&mut uart, reg::DR), 0);
        assert_eq!(r(&mut uart, reg::FR), fr::TXFE | fr::RXFE);
        uart.push_rx(b'z');
        assert_eq!(r(&mut uart, reg::DR), u32::from(b'z'));
    }

    #[test]
    fn receiver_disabled_drops_bytes() {
        let mut uart = Pl011::new();
        assert!(!uart.can_receive());
        assert!(!uart.push_rx(b'a'), "UARTEN clear at reset");
        w(&mut uart, reg::CR, cr::UARTEN | cr::TXE);
        assert!(!uart.push_rx(b'b'), "RXE clear");
        assert_eq!(uart.stats().rx_dropped_disabled, 2);
        assert_ne!(r(&mut uart, reg::FR) & fr::RXFE, 0);
    }

    #[test]
    fn flag_register_tracks_receive_fifo_fill() {
        let mut uart = enabled_with_fifos();
        assert_eq!(r(&mut uart, reg::FR), fr::TXFE | fr::RXFE);
        uart.push_rx(0);
        assert_eq!(r(&mut uart, reg::FR), fr::TXFE);
        for _ in 1..FIFO_DEPTH {
            uart.push_rx(0);
        }
        assert_eq!(r(&mut uart, reg::FR), fr::TXFE | fr::RXFF);
        // Narrow reads of FR see the same bits.
        assert_eq!(uart.read(reg::FR, 1).unwrap(), fr::TXFE | fr::RXFF);
        assert_eq!(uart.read(reg::FR, 2).unwrap(), fr::TXFE | fr::RXFF);
        // FR is read-only.
        w(&mut uart, reg::FR, 0xffff);
        assert_eq!(r(&mut uart, reg::FR), fr::TXFE | fr::RXFF);
    }

    #[test]
    fn rx_interrupt_at_trigger_level_and_timeout_below_it() {
        // IFLS RX field: 1/8, 1/4, 1/2, 3/4, 7/8 of 16.
        for (rxiflsel, trigger) in [(0u32, 2usize), (1, 4), (2, 8), (3, 12), (4, 14)] {
            let mut uart = enabled_with_fifos();
            w(&mut uart, reg::IFLS, rxiflsel << 3);
            w(&mut uart, reg::IMSC, int::RX | int::RT);
            assert!(!uart.irq_level());
            for n in 1..=FIFO_DEPTH {
                uart.push_rx(n as u8);
                let ris = r(&mut uart, reg::RIS) & (int::RX | int::RT);
                let want = if n >= trigger { int::RX } else { int::RT };
                assert_eq!(ris, want, "trigger {trigger}, {n} bytes");
                assert!(uart.irq_level());
            }
            for n in (0..FIFO_DEPTH).rev() {
                r(&mut uart, reg::DR);
                let ris = r(&mut uart, reg::RIS) & (int::RX | int::RT);
                let want = match n {
                    0 => 0,
                    n if n >= trigger => int::RX,
                    _ => int::RT,
                };
                assert_eq!(ris, want, "trigger {trigger}, {n} bytes left");
            }
            assert!(!uart.irq_level());
        }
    }

    #[test]
    fn without_fifos_one_byte_raises_rx_interrupt() {
        let mut uart = Pl011::new();
        w(&mut uart, reg::CR, cr::UARTEN | cr::RXE);
        w(&mut uart, reg::IMSC, int::RX | int::RT);
        uart.push_rx(b'q');
        assert_eq!(r(&mut uart, reg::MIS), int::RX);
        r(&mut uart, reg::DR);
        assert_eq!(r(&mut uart, reg::MIS), 0);
    }

    #[test]
    fn masked_interrupts_show_in_ris_but_not_mis_or_the_line() {
        let mut uart = enabled_with_fifos();
        uart.push_rx(b'a');
        assert_eq!(r(&mut uart, reg::RIS), int::TX | int::RT);
        assert_eq!(r(&mut uart, reg::MIS), 0);
        assert!(!uart.irq_level());
        let effect = w(&mut uart, reg::IMSC, int::RT);
        assert!(effect.irq_changed);
        assert!(uart.irq_level());
        assert_eq!(r(&mut uart, reg::MIS), int::RT);
    }

    #[test]
    fn tx_interrupt_raised_when_transmitter_enabled_and_after_each_write() {
        let mut uart = Pl011::new();
        w(&mut uart, reg::IMSC, int::TX);
        assert!(!uart.irq_level(), "UART disabled at reset");
        let effect = w(&mut uart, reg::CR, cr::UARTEN | cr::TXE);
        assert!(effect.irq_changed);
        assert!(uart.irq_level());
        // Clearing it sticks until the FIFO drains again, i.e. the next write.
        let effect = w(&mut uart, reg::ICR, int::TX);
        assert!(effect.irq_changed);
        assert!(!uart.irq_level());
        // Rewriting CR with the transmitter already on is not a new event.
        w(&mut uart, reg::CR, cr::UARTEN | cr::TXE | cr::RXE);
        assert!(!uart.irq_level());
        let effect = w(&mut uart, reg::DR, b'x'.into());
        assert_eq!(
            effect,
            WriteEffect {
                transmitted: Some(b'x'),
                irq_changed: true
            }
        );
        // Stays set while the FIFO is empty (QEMU's behaviour) ...
        w(&mut uart, reg::DR, b'y'.into());
        assert_eq!(r(&mut uart, reg::MIS), int::TX);
        // ... until masked.
        let effect = w(&mut uart, reg::IMSC, 0);
        assert!(effect.irq_changed);
        assert!(!uart.irq_level());
        assert_eq!(r(&mut uart, reg::RIS), int::TX);
    }

    #[test]
    fn icr_clears_only_the_written_bits() {
        let mut uart = enabled_with_fifos();
        w(&mut uart, reg::IMSC, int::ALL);
        uart.push_rx(b'a');
        assert_eq!(r(&mut uart, reg::RIS), int::TX | int::RT);
        w(&mut uart, reg::ICR, int::RT);
        assert_eq!(r(&mut uart, reg::RIS), int::TX);
        assert!(uart.irq_level());
        // A byte-wide write to the ICR's low byte works too.
        uart.write(reg::ICR, 1, int::TX).unwrap();
        assert_eq!(r(&mut uart, reg::RIS), 0);
        assert!(!uart.irq_level());
        // The next change of the FIFO re-evaluates the receive interrupts.
        uart.push_rx(b'b');
        assert_eq!(r(&mut uart, reg::RIS), int::RT);
        // ICR reads as zero; writing zero clears nothing.
        assert_eq!(r(&mut uart, reg::ICR), 0);
        w(&mut uart, reg::ICR, 0);
        assert_eq!(r(&mut uart, reg::RIS), int::RT);
    }

    #[test]
    fn lowering_the_trigger_level_raises_rx_interrupt() {
        let mut uart = enabled_with_fifos();
        w(&mut uart, reg::IMSC, int::RX);
        for _ in 0..3 {
            uart.push_rx(0);
        }
        assert!(!uart.irq_level(), "3 bytes below the 1/2 trigger");
        let effect = w(&mut uart, reg::IFLS, 0);
        assert!(effect.irq_changed, "3 bytes reach the 1/8 trigger (2)");
    }

    #[test]
    fn identification_registers_read_as_a_pl011() {
        let mut uart = Pl011::new();
        let ids: Vec<u32> = (0..8).map(|i| r(&mut uart, 0xfe0 + 4 * i)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        assert_eq!(uart.read(0xfe0, 1).unwrap(), 0x11);
        assert_eq!(uart.read(0xfe1, 1).unwrap(), 0, "upper bytes are zero");
        // Read-only: writes are ignored.
        w(&mut uart, 0xfe0, 0);
        assert_eq!(r(&mut uart, 0xfe0), 0x11);
    }

    #[test]
    fn control_registers_store_their_defined_bits() {
        let mut uart = Pl011::new();
        for (offset, mask) in [
            (reg::ILPR, 0xff),
            (reg::IBRD, 0xffff),
            (reg::FBRD, 0x3f),
            (reg::LCR_H, 0xff),
            (reg::CR, 0xff87),
            (reg::IFLS, 0x3f),
            (reg::IMSC, 0x7ff),
            (reg::DMACR, 0x7),
        ] {
            w(&mut uart, offset, 0xffff_ffff);
            assert_eq!(r(&mut uart, offset), mask, "offset {offset:#x}");
        }
    }

    #[test]
    fn narrow_writes_zero_extend_or_merge() {
        let mut uart = Pl011::new();
        w(&mut uart, reg::IBRD, 0x1234);
        uart.write(reg::IBRD, 1, 0x56).unwrap();
        assert_eq!(
            r(&mut uart, reg::IBRD),
            0x0056,
            "low-byte write zero-extends"
        );
        uart.write(reg::IBRD + 1, 1, 0x78).unwrap();
        assert_eq!(r(&mut uart, reg::IBRD), 0x7856, "upper-byte write merges");
        uart.write(reg::CR, 2, 0x0301).unwrap();
        assert_eq!(r(&mut uart, reg::CR), 0x0301);
        assert_eq!(uart.read(reg::CR + 1, 1).unwrap(), 0x03);
        assert_eq!(uart.read(reg::CR + 2, 2).unwrap(), 0);
    }

    #[test]
    fn bad_offsets_and_sizes_are_errors() {
        let mut uart = Pl011::new();
        for size in [0u8, 3, 5, 8, 255] {
            assert_eq!(uart.read(reg::DR, size), Err(Pl011Error::BadSize(size)));
            assert_eq!(uart.write(reg::DR, size, 0), Err(Pl011Error::BadSize(size)));
        }
        for (offset, size) in [(0x001, 2), (0x002, 4), (0x019, 4), (0x031, 2)] {
            assert_eq!(
                uart.read(offset, size),
                Err(Pl011Error::Misaligned { offset, size })
            );
            assert_eq!(
                uart.write(offset, size, 0),
                Err(Pl011Error::Misaligned { offset, size })
            );
        }
        for offset in [
            0x008,
            0x00c,
            0x010,
            0x014,
            0x01c,
            0x04c,
            0x080,
            0xfdc,
            0x1000,
            0x1004,
            u64::MAX - 3,
        ] {
            assert_eq!(uart.read(offset, 4), Err(Pl011Error::NoRegister(offset)));
            assert_eq!(
                uart.write(offset, 4, 0),
                Err(Pl011Error::NoRegister(offset))
            );
        }
        // A refused write changes nothing.
        assert_eq!(uart.stats(), Pl011Stats::default());
        assert_eq!(r(&mut uart, reg::CR), cr::RESET);
    }

    /// xorshift64: a fixed, dependency-free pseudo-random sequence.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_accesses_never_panic_and_keep_invariants() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut uart = Pl011::new();
        for step in 0..200_000 {
            let x = rng.next();
            let size = [1u8, 2, 4, 4, 4, 3, 0, 8][(x & 7) as usize];
            let offset = match (x >> 3) & 3 {
                0 => (x >> 8) & 0x4f,
                1 => 0xfc0 + ((x >> 8) & 0x7f),
                2 => (x >> 8) & 0xfff,
                _ => x >> 8,
            };
            let value = (rng.next() >> 16) as u32;
            let before = uart.irq_level();
            match rng.next() % 4 {
                0 => {
                    let _ = uart.read(offset, size);
                }
                1 => {
                    if let Ok(effect) = uart.write(offset, size, value) {
                        assert_eq!(
                            effect.irq_changed,
                            uart.irq_level() != before,
                            "step {step}"
                        );
                    }
                }
                2 => {
                    let can = uart.can_receive();
                    assert_eq!(uart.push_rx(value as u8), can, "step {step}");
                }
                _ => {
                    if value.is_multiple_of(1000) {
                        uart.reset();
                    }
                }
            }
            let fr = uart.read(reg::FR, 4).unwrap();
            let ris = uart.read(reg::RIS, 4).unwrap();
            let imsc = uart.read(reg::IMSC, 4).unwrap();
            let mis = uart.read(reg::MIS, 4).unwrap();
            assert_eq!(mis, ris & imsc);
            assert_eq!(uart.irq_level(), mis != 0);
            assert!(uart.rx_count <= uart.depth());
            assert_eq!(fr & fr::RXFE != 0, uart.rx_count == 0);
            assert_eq!(fr & fr::RXFF != 0, uart.rx_count == uart.depth());
            assert_eq!(fr & (fr::TXFE | fr::TXFF | fr::BUSY), fr::TXFE);
        }
    }

    /// The register traffic of Linux's `amba-pl011` driver bringing the port
    /// up (`pl011_hwinit`, `pl011_set_termios`, `pl011_startup`,
    /// `pl011_enable_interrupts`), then interrupt-driven transmit and receive.
    #[test]
    fn linux_driver_startup_transmit_and_receive() {
        let mut uart = Pl011::new();
        let mut line = Vec::new();

        // pl011_hwinit: clear all interrupts, mask them all.
        w(&mut uart, reg::ICR, int::ALL);
        w(&mut uart, reg::IMSC, 0);
        // pl011_set_termios: disable, program 115200 8N1 with FIFOs, restore.
        let old_cr = r(&mut uart, reg::CR);
        w(&mut uart, reg::CR, 0);
        w(&mut uart, reg::IBRD, 13);
        w(&mut uart, reg::FBRD, 1);
        w(&mut uart, reg::LCR_H, 0x60 | lcr_h::FEN);
        w(&mut uart, reg::CR, old_cr);
        // pl011_startup: trigger levels, then enable.
        w(&mut uart, reg::IFLS, 0x12);
        w(&mut uart, reg::CR, cr::UARTEN | cr::TXE | cr::RXE);
        assert!(!uart.irq_level(), "everything still masked");
        // pl011_enable_interrupts: clear RX/RT, drain RX, unmask RX|RT.
        w(&mut uart, reg::ICR, int::RX | int::RT);
        for _ in 0..2 * FIFO_DEPTH {
            if r(&mut uart, reg::FR) & fr::RXFE != 0 {
                break;
            }
            r(&mut uart, reg::DR);
        }
        let effect = w(&mut uart, reg::IMSC, int::RX | int::RT);
        assert!(!effect.irq_changed);
        assert!(!uart.irq_level());

        // pl011_start_tx_pio: a 20-byte message. pl011_tx_chars writes at
        // most fifosize/2 while TXFF is clear, then unmasks TX and waits.
        let message = b"Welcome to the guest";
        let mut pending = &message[..];
        let tx_chars = |uart: &mut Pl011, pending: &mut &[u8], line: &mut Vec<u8>| {
            let mut budget = FIFO_DEPTH / 2;
            while budget > 0 && !pending.is_empty() && r(uart, reg::FR) & fr::TXFF == 0 {
                let effect = w(uart, reg::DR, pending[0].into());
                line.extend(effect.transmitted);
                *pending = &pending[1..];
                budget -= 1;
            }
            !pending.is_empty()
        };
        assert!(tx_chars(&mut uart, &mut pending, &mut line));
        let effect = w(&mut uart, reg::IMSC, int::RX | int::RT | int::TX);
        assert!(effect.irq_changed, "TXIS is pending: the FIFO has drained");
        // pl011_int: loop while MIS != 0, acking all but RX/RT/TX.
        let mut interrupts = 0;
        while uart.irq_level() {
            interrupts += 1;
            assert!(interrupts < 10, "interrupt storm");
            let status = r(&mut uart, reg::MIS);
            w(&mut uart, reg::ICR, status & !(int::TX | int::RT | int::RX));
            if status & int::TX != 0 && !tx_chars(&mut uart, &mut pending, &mut line) {
                // pl011_stop_tx
                w(&mut uart, reg::IMSC, int::RX | int::RT);
            }
        }
        assert_eq!(line, message);
        assert_eq!(uart.stats().tx_while_disabled, 0);

        // Receive: a keystroke raises the timeout interrupt (below trigger).
        assert!(uart.push_rx(b'l'));
        assert!(uart.irq_level());
        assert_eq!(r(&mut uart, reg::MIS), int::RT);
        let mut received = Vec::new();
        let rx_chars = |uart: &mut Pl011, received: &mut Vec<u8>| {
            while r(uart, reg::FR) & fr::RXFE == 0 {
                received.push(r(uart, reg::DR) as u8);
            }
        };
        rx_chars(&mut uart, &mut received);
        assert!(!uart.irq_level(), "draining the FIFO lowers the line");

        // A paste: eight bytes reach the 1/2 trigger and raise RX.
        for &byte in b"ls -l /\n" {
            assert!(uart.push_rx(byte));
        }
        assert_eq!(r(&mut uart, reg::MIS), int::RX);
        rx_chars(&mut uart, &mut received);
        assert!(!uart.irq_level());
        assert_eq!(received, b"lls -l /\n");

        // pl011_shutdown: mask and clear all, disable RX (console keeps TX).
        w(&mut uart, reg::IMSC, 0);
        w(&mut uart, reg::ICR, int::ALL);
        w(&mut uart, reg::CR, cr::UARTEN | cr::TXE);
        assert!(!uart.irq_level());
        assert!(!uart.push_rx(b'x'));
    }
}
