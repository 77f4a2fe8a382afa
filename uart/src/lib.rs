#![no_std]
//! Console UARTs shared by the hypervisor (transmit only) and dom0 (which
//! also receives): the Arm PL011 (QEMU virt, Raspberry Pi `uart0`) and the
//! BCM2835 auxiliary mini-UART (the Raspberry Pi's default console).
//! Transmit polls; receive is interrupt-driven (the caller drains the FIFO
//! from the UART's interrupt). The PL011's register map is `hv_arm::pl011`'s;
//! the UART this driver runs is its user's own (mapped, not emulated), so it
//! uses the `register_structs!` layout directly.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

use hv_arm::pl011::{Registers as Pl011Regs, UARTCR as PL011_CR, UARTFR as PL011_FR, UARTINT as PL011_INT};
use hv_devtree::platform::UartKind;

register_bitfields! [u32,
    /// Mini-UART AUX_MU_IER_REG (BCM2711 peripherals 2.2.2; bit 0 enables receive interrupts).
    AUX_IER [
        RX OFFSET(0) NUMBITS(1) []
    ],
    /// Mini-UART AUX_MU_LSR_REG, line status.
    AUX_LSR [
        DATA_READY OFFSET(0) NUMBITS(1) [],
        TX_EMPTY OFFSET(5) NUMBITS(1) [],
        TX_IDLE OFFSET(6) NUMBITS(1) []
    ]
];

register_structs! {
    AuxUartRegs {
        (0x00 => io: ReadWrite<u32>),
        (0x04 => ier: ReadWrite<u32, AUX_IER::Register>),
        (0x08 => iir: ReadWrite<u32>),
        (0x0c => _reserved0),
        (0x14 => lsr: ReadOnly<u32, AUX_LSR::Register>),
        (0x18 => @END),
    }
}

enum Regs {
    Pl011(&'static Pl011Regs),
    Aux(&'static AuxUartRegs),
}

/// A console UART at a mapped address.
pub struct Uart {
    regs: Regs,
}

// SAFETY: the registers are MMIO reached through shared references; the
// console serialises transmitters with a lock, and the receive side is only
// drained by the UART's interrupt handler (RX and TX registers are independent).
unsafe impl Sync for Uart {}
// SAFETY: as above.
unsafe impl Send for Uart {}

impl Uart {
    /// # Safety
    /// `base` must be the address, mapped as Device memory (or with the MMU
    /// off), of a UART of type `kind` that nothing else drives.
    pub unsafe fn new(kind: UartKind, base: usize) -> Self {
        // SAFETY: per this function's contract the registers are mapped and ours.
        let regs = unsafe {
            match kind {
                UartKind::Pl011 => Regs::Pl011(&*(base as *const Pl011Regs)),
                UartKind::Bcm2835Aux => Regs::Aux(&*(base as *const AuxUartRegs)),
            }
        };
        // Where no firmware ran (QEMU virt) the PL011 starts disabled: enable
        // it without touching the baud rate firmware may have chosen.
        if let Regs::Pl011(r) = regs {
            if !r.cr.is_set(PL011_CR::UARTEN) {
                r.cr.write(PL011_CR::UARTEN::SET + PL011_CR::TXE::SET + PL011_CR::RXE::SET);
            }
        }
        Uart { regs }
    }

    // Not inlined: a console path, not a fast one; inlined, each caller
    // carried both UARTs' wait loops.
    #[inline(never)]
    pub fn write_byte(&self, byte: u8) {
        match self.regs {
            Regs::Pl011(r) => {
                while r.fr.is_set(PL011_FR::TXFF) {
                    core::hint::spin_loop();
                }
                r.dr.set(u32::from(byte));
            }
            Regs::Aux(r) => {
                while !r.lsr.is_set(AUX_LSR::TX_EMPTY) {
                    core::hint::spin_loop();
                }
                r.io.set(u32::from(byte));
            }
        }
    }

    /// The next received byte, if one is waiting.
    pub fn read_byte(&self) -> Option<u8> {
        match self.regs {
            Regs::Pl011(r) => (!r.fr.is_set(PL011_FR::RXFE)).then(|| r.dr.get() as u8),
            Regs::Aux(r) => r.lsr.is_set(AUX_LSR::DATA_READY).then(|| r.io.get() as u8),
        }
    }

    /// Enables the receive interrupt (PL011: RX and RX-timeout; mini-UART: IER bit 0).
    pub fn enable_rx_interrupt(&self) {
        match self.regs {
            Regs::Pl011(r) => {
                r.icr.write(PL011_INT::RX::SET + PL011_INT::RT::SET);
                r.imsc.write(PL011_INT::RX::SET + PL011_INT::RT::SET);
            }
            Regs::Aux(r) => r.ier.write(AUX_IER::RX::SET),
        }
    }

    /// Interrupt side: hands every waiting byte to `sink`, then clears the
    /// interrupt (the mini-UART's clears itself when the FIFO is empty).
    pub fn drain_rx(&self, mut sink: impl FnMut(u8)) {
        while let Some(b) = self.read_byte() {
            sink(b);
        }
        if let Regs::Pl011(r) = self.regs {
            r.icr.write(PL011_INT::RX::SET + PL011_INT::RT::SET);
        }
    }

    /// Waits until every queued byte has left the UART.
    pub fn flush(&self) {
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

impl core::fmt::Write for Uart {
    /// Text output for consoles: `\n` becomes `\r\n`.
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}
