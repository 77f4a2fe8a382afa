//! Console UARTs: the Arm PL011 (QEMU virt, Raspberry Pi 4 `uart0`) and the
//! BCM2835 auxiliary mini-UART (the Raspberry Pi 4's default console).
//!
//! The boot firmware has already set up baud rate and pins; the hypervisor
//! only transmits, polling, so it never depends on the UART's interrupt.

use core::fmt;

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

use crate::platform::UartKind;

register_bitfields! [u32,
    /// PL011 UARTFR, flag register (PL011 TRM 3.3.3).
    PL011_FR [
        BUSY OFFSET(3) NUMBITS(1) [],
        TXFF OFFSET(5) NUMBITS(1) []
    ],
    /// PL011 UARTCR, control register (PL011 TRM 3.3.8).
    PL011_CR [
        UARTEN OFFSET(0) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        RXE OFFSET(9) NUMBITS(1) []
    ],
    /// Mini-UART AUX_MU_LSR_REG, line status (BCM2711 peripherals 2.2.2).
    AUX_LSR [
        TX_EMPTY OFFSET(5) NUMBITS(1) [],
        TX_IDLE OFFSET(6) NUMBITS(1) []
    ]
];

register_structs! {
    Pl011Regs {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x18 => fr: ReadOnly<u32, PL011_FR::Register>),
        (0x1c => _reserved1),
        (0x30 => cr: ReadWrite<u32, PL011_CR::Register>),
        (0x34 => @END),
    },
    AuxUartRegs {
        (0x00 => io: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x14 => lsr: ReadOnly<u32, AUX_LSR::Register>),
        (0x18 => @END),
    }
}

enum Regs {
    Pl011(&'static Pl011Regs),
    Aux(&'static AuxUartRegs),
}

/// A transmit-only console UART at a mapped address.
pub struct Uart {
    regs: Regs,
}

// SAFETY: a `Uart` is the only handle to its registers (see `new`), so
// moving it to another CPU moves exclusive access with it; the console keeps
// it behind a lock.
unsafe impl Send for Uart {}

impl Uart {
    /// # Safety
    /// `base` must be the address, mapped as device memory in the current
    /// translation regime (or with the MMU off), of a UART of type `kind`
    /// that nothing else drives concurrently for the life of the program.
    pub unsafe fn new(kind: UartKind, base: usize) -> Self {
        // SAFETY: per this function's contract the registers are mapped and
        // ours; both register blocks are u32 MMIO registers at these offsets.
        let regs = unsafe {
            match kind {
                UartKind::Pl011 => Regs::Pl011(&*(base as *const Pl011Regs)),
                UartKind::Bcm2835Aux => Regs::Aux(&*(base as *const AuxUartRegs)),
            }
        };
        // Firmware normally leaves the console enabled; where there is no
        // firmware (QEMU virt) the PL011 starts disabled. Enable it without
        // touching the baud rate the firmware may have chosen.
        if let Regs::Pl011(r) = regs {
            if !r.cr.is_set(PL011_CR::UARTEN) {
                r.cr.write(PL011_CR::UARTEN::SET + PL011_CR::TXE::SET + PL011_CR::RXE::SET);
            }
        }
        Uart { regs }
    }

    pub fn write_byte(&mut self, byte: u8) {
        match self.regs {
            Regs::Pl011(r) => {
                while r.fr.is_set(PL011_FR::TXFF) {
                    core::hint::spin_loop();
                }
                r.dr.set(byte as u32);
            }
            Regs::Aux(r) => {
                while !r.lsr.is_set(AUX_LSR::TX_EMPTY) {
                    core::hint::spin_loop();
                }
                r.io.set(byte as u32);
            }
        }
    }

    /// Waits until every queued byte has left the UART.
    pub fn flush(&mut self) {
        match self.regs {
            Regs::Pl011(r) => {
                while r.fr.is_set(PL011_FR::BUSY) {
                    core::hint::spin_loop();
                }
            }
            Regs::Aux(r) => {
                while !r.lsr.is_set(AUX_LSR::TX_IDLE) {
                    core::hint::spin_loop();
                }
            }
        }
    }
}

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}
