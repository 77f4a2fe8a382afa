//! The common virtio-mmio registers: identity, feature negotiation, status,
//! queue setup, access checks, interrupts, reset, budget.

use crate::block::{Block, MemDisk};
use crate::console::{Console, TRANSMITQ, VIRTIO_CONSOLE_F_SIZE};
use crate::device::{RxError, DEVICE_ID_BLOCK, DEVICE_ID_CONSOLE, VIRTIO_F_VERSION_1};
use crate::mmio::{
    reg, status, AccessError, MmioDevice, Outcome, INTERRUPT_CONFIG_CHANGE, INTERRUPT_USED_BUFFER, VENDOR_ID,
};
use crate::queue::VIRTQ_AVAIL_F_NO_INTERRUPT;
use crate::testutil::*;
use crate::GuestMemory;

fn console() -> MmioDevice<Console> {
    MmioDevice::new(Console::new())
}

/// Submits `n` one-byte transmit buffers "0", "1", ... on the console.
fn submit_tx(drv: &mut Driver, mem: &mut crate::VecMemory, n: u8) {
    for i in 0..n {
        let b = drv.buffer(mem, &[b'0' + i]);
        drv.submit(mem, TRANSMITQ, &[r(b, 1)]);
    }
}

#[test]
fn identity_registers_read_as_virtio_mmio_version_2() {
    let dev = MmioDevice::new(Block::new(MemDisk::new(8), false));
    assert_eq!(rd(&dev, reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rd(&dev, reg::VERSION), 2);
    assert_eq!(rd(&dev, reg::DEVICE_ID), DEVICE_ID_BLOCK);
    assert_eq!(rd(&dev, reg::VENDOR_ID), VENDOR_ID);
    assert_eq!(rd(&console(), reg::DEVICE_ID), DEVICE_ID_CONSOLE);
}

#[test]
fn device_features_offer_version_1_in_the_high_word() {
    let mut mem = memory();
    let mut dev = MmioDevice::new(Console::with_size(80, 25));
    let f = read_features(&mut dev, &mut mem);
    assert_eq!(f, VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_SIZE);
    wr(&mut dev, &mut mem, reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(rd(&dev, reg::DEVICE_FEATURES), 0);
}

#[test]
fn full_probe_makes_the_device_live() {
    let mut mem = memory();
    let mut dev = console();
    let drv = Driver::probe(&mut dev, &mut mem, 0, 16);
    assert_eq!(drv.queues.len(), 2);
    assert_eq!(rd(&dev, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    assert_eq!(dev.driver_features(), VIRTIO_F_VERSION_1);
    let q = dev.queue(1).unwrap();
    assert_eq!(q.size(), 16);
    assert_eq!(q.addresses(), (drv.queues[1].desc, drv.queues[1].avail, drv.queues[1].used));
}

fn try_features_ok(
    dev: &mut MmioDevice<Console>,
    mem: &mut crate::VecMemory,
    setup: impl FnOnce(&mut MmioDevice<Console>, &mut crate::VecMemory),
) -> bool {
    wr(dev, mem, reg::STATUS, 0);
    wr(dev, mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    setup(dev, mem);
    wr(dev, mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    rd(dev, reg::STATUS) & status::FEATURES_OK != 0
}

#[test]
fn features_ok_is_refused_for_features_not_offered() {
    let mut mem = memory();
    let mut dev = console();
    // VIRTIO_F_INDIRECT_DESC (28) is not offered.
    assert!(!try_features_ok(&mut dev, &mut mem, |d, m| write_features(d, m, VIRTIO_F_VERSION_1 | 1 << 28)));
    // The console offers no SIZE unless constructed with one.
    assert!(!try_features_ok(&mut dev, &mut mem, |d, m| write_features(
        d,
        m,
        VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_SIZE
    )));
    assert!(!dev.live());
    // The status keeps the other bits.
    assert_eq!(rd(&dev, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER);
    assert!(try_features_ok(&mut dev, &mut mem, |d, m| write_features(d, m, VIRTIO_F_VERSION_1)));
}

#[test]
fn features_ok_is_refused_without_version_1() {
    let mut mem = memory();
    let mut dev = console();
    assert!(!try_features_ok(&mut dev, &mut mem, |d, m| write_features(d, m, 0)));
}

#[test]
fn features_ok_is_refused_after_bits_at_an_unknown_selector() {
    let mut mem = memory();
    let mut dev = console();
    assert!(!try_features_ok(&mut dev, &mut mem, |d, m| {
        write_features(d, m, VIRTIO_F_VERSION_1);
        wr(d, m, reg::DRIVER_FEATURES_SEL, 7);
        wr(d, m, reg::DRIVER_FEATURES, 1);
    }));
    // A reset forgets it.
    assert!(try_features_ok(&mut dev, &mut mem, |d, m| write_features(d, m, VIRTIO_F_VERSION_1)));
}

#[test]
fn driver_features_are_frozen_after_features_ok() {
    let mut mem = memory();
    let mut dev = console();
    Driver::negotiate(&mut dev, &mut mem, 0);
    write_features(&mut dev, &mut mem, VIRTIO_F_VERSION_1 | 1 << 28);
    assert_eq!(dev.driver_features(), VIRTIO_F_VERSION_1);
}

#[test]
fn driver_ok_without_features_ok_serves_nothing() {
    let mut mem = memory();
    let mut dev = console();
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    wr(&mut dev, &mut mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK);
    assert!(!dev.live());
    submit_tx(&mut drv, &mut mem, 1);
    assert_eq!(drv.notify(&mut dev, &mut mem, TRANSMITQ), Outcome::default());
    assert!(drv.used(&mem, TRANSMITQ).is_empty());
}

#[test]
fn notify_before_driver_ok_serves_nothing() {
    let mut mem = memory();
    let mut dev = console();
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    wr(&mut dev, &mut mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    submit_tx(&mut drv, &mut mem, 1);
    assert_eq!(drv.notify(&mut dev, &mut mem, TRANSMITQ), Outcome::default());
    assert!(dev.device().output().is_empty());
    // Once DRIVER_OK is set the same buffer is served.
    wr(&mut dev, &mut mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    assert!(drv.notify(&mut dev, &mut mem, TRANSMITQ).interrupt);
    assert_eq!(dev.device().output(), b"0");
}

fn select_fresh_queue(dev: &mut MmioDevice<Console>, mem: &mut crate::VecMemory) {
    Driver::negotiate(dev, mem, 0);
    wr(dev, mem, reg::QUEUE_SEL, 0);
}

#[test]
fn queue_num_not_a_power_of_two_is_refused_at_ready() {
    let mut mem = memory();
    let mut dev = console();
    select_fresh_queue(&mut dev, &mut mem);
    wr(&mut dev, &mut mem, reg::QUEUE_NUM, 24);
    wr(&mut dev, &mut mem, reg::QUEUE_READY, 1);
    assert_eq!(rd(&dev, reg::QUEUE_READY), 0);
    // A valid size makes it acceptable.
    wr(&mut dev, &mut mem, reg::QUEUE_NUM, 32);
    wr(&mut dev, &mut mem, reg::QUEUE_READY, 1);
    assert_eq!(rd(&dev, reg::QUEUE_READY), 1);
}

#[test]
fn queue_num_above_max_or_zero_is_refused_at_ready() {
    let mut mem = memory();
    let mut dev = console();
    select_fresh_queue(&mut dev, &mut mem);
    let max = rd(&dev, reg::QUEUE_NUM_MAX);
    for bad in [max * 2, 0, u32::MAX] {
        wr(&mut dev, &mut mem, reg::QUEUE_NUM, bad);
        wr(&mut dev, &mut mem, reg::QUEUE_READY, 1);
        assert_eq!(rd(&dev, reg::QUEUE_READY), 0, "QueueNum {bad}");
    }
}

#[test]
fn queue_registers_are_ignored_while_the_queue_is_ready() {
    let mut mem = memory();
    let mut dev = console();
    let drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    wr(&mut dev, &mut mem, reg::QUEUE_SEL, 1);
    let before = dev.queue(1).unwrap().clone();
    wr(&mut dev, &mut mem, reg::QUEUE_NUM, 2);
    wr(&mut dev, &mut mem, reg::QUEUE_DESC_LOW, 0x1234_0000);
    wr(&mut dev, &mut mem, reg::QUEUE_DRIVER_HIGH, 0xFFFF_FFFF);
    wr(&mut dev, &mut mem, reg::QUEUE_DEVICE_LOW, 0);
    assert_eq!(dev.queue(1).unwrap(), &before);
    assert_eq!(dev.queue(1).unwrap().addresses().0, drv.queues[1].desc);
}

#[test]
fn queue_can_be_disabled_and_reconfigured() {
    let mut mem = memory();
    let mut dev = console();
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    wr(&mut dev, &mut mem, reg::QUEUE_SEL, TRANSMITQ as u32);
    wr(&mut dev, &mut mem, reg::QUEUE_READY, 0);
    assert_eq!(rd(&dev, reg::QUEUE_READY), 0);
    submit_tx(&mut drv, &mut mem, 1);
    assert_eq!(drv.notify(&mut dev, &mut mem, TRANSMITQ), Outcome::default());
    // Now writable: move the used ring and enable again; indices restart.
    let new_used = drv.alloc(0x1000);
    wr(&mut dev, &mut mem, reg::QUEUE_DEVICE_LOW, new_used as u32);
    wr(&mut dev, &mut mem, reg::QUEUE_READY, 1);
    assert_eq!(dev.queue(TRANSMITQ).unwrap().addresses().2, new_used);
    assert_eq!(dev.queue(TRANSMITQ).unwrap().last_avail_idx(), 0);
}

#[test]
fn queue_address_halves_combine_into_64_bits() {
    let mut mem = memory();
    let mut dev = console();
    select_fresh_queue(&mut dev, &mut mem);
    wr(&mut dev, &mut mem, reg::QUEUE_DESC_LOW, 0x89AB_CDEF);
    wr(&mut dev, &mut mem, reg::QUEUE_DESC_HIGH, 0x0123_4567);
    wr(&mut dev, &mut mem, reg::QUEUE_DRIVER_HIGH, 0x11);
    wr(&mut dev, &mut mem, reg::QUEUE_DRIVER_LOW, 0x22);
    wr(&mut dev, &mut mem, reg::QUEUE_DEVICE_LOW, 0x33);
    assert_eq!(dev.queue(0).unwrap().addresses(), (0x0123_4567_89AB_CDEF, 0x11_0000_0022, 0x33));
}

#[test]
fn nonexistent_queue_reads_as_absent_and_ignores_writes() {
    let mut mem = memory();
    let mut dev = console();
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    for sel in [2, 0xFFFF, u32::MAX] {
        wr(&mut dev, &mut mem, reg::QUEUE_SEL, sel);
        assert_eq!(rd(&dev, reg::QUEUE_NUM_MAX), 0);
        wr(&mut dev, &mut mem, reg::QUEUE_NUM, 4);
        wr(&mut dev, &mut mem, reg::QUEUE_READY, 1);
        assert_eq!(rd(&dev, reg::QUEUE_READY), 0);
    }
    submit_tx(&mut drv, &mut mem, 1);
    for q in [2u32, 7, 0x1_0001, u32::MAX] {
        assert_eq!(wr_out(&mut dev, &mut mem, reg::QUEUE_NOTIFY, q), Outcome::default());
    }
    assert!(dev.live());
    assert!(dev.device().output().is_empty());
}

#[test]
fn register_accesses_must_be_32_bit_and_aligned() {
    let mut mem = memory();
    let mut dev = console();
    for size in [1u8, 2, 8, 0, 3] {
        assert_eq!(dev.read(reg::STATUS, size), Err(AccessError::Size { offset: reg::STATUS, size }));
        assert_eq!(dev.write(&mut mem, reg::STATUS, size, 0), Err(AccessError::Size { offset: reg::STATUS, size }));
    }
    assert_eq!(dev.read(0x72, 4), Err(AccessError::Unaligned { offset: 0x72, size: 4 }));
    assert_eq!(dev.write(&mut mem, 0x51, 4, 0), Err(AccessError::Unaligned { offset: 0x51, size: 4 }));
}

#[test]
fn config_space_takes_byte_half_and_word_accesses() {
    let dev = MmioDevice::new(Console::with_size(0x1234, 0x5678));
    assert_eq!(dev.read(0x100, 4), Ok(0x5678_1234));
    assert_eq!(dev.read(0x100, 2), Ok(0x1234));
    assert_eq!(dev.read(0x102, 2), Ok(0x5678));
    assert_eq!(dev.read(0x101, 1), Ok(0x12));
    assert_eq!(dev.read(0x103, 1), Ok(0x56));
    // Past the structure: zeros.
    assert_eq!(dev.read(0x1FC, 4), Ok(0));
    assert_eq!(dev.read(0x100, 8), Err(AccessError::Size { offset: 0x100, size: 8 }));
    assert_eq!(dev.read(0x101, 2), Err(AccessError::Unaligned { offset: 0x101, size: 2 }));
    assert_eq!(dev.read(0x102, 4), Err(AccessError::Unaligned { offset: 0x102, size: 4 }));
}

#[test]
fn config_writes_are_ignored() {
    let mut mem = memory();
    let mut dev = MmioDevice::new(Console::with_size(80, 25));
    assert_eq!(dev.write(&mut mem, 0x100, 2, 999), Ok(Outcome::default()));
    assert_eq!(dev.read(0x100, 2), Ok(80));
    assert!(mem.bytes().iter().all(|&b| b == 0));
}

#[test]
fn accesses_outside_the_window_are_refused() {
    let mut mem = memory();
    let mut dev = console();
    assert_eq!(dev.read(0x200, 4), Err(AccessError::OutOfRange { offset: 0x200 }));
    assert_eq!(dev.read(0x1FE, 4), Err(AccessError::OutOfRange { offset: 0x1FE }));
    assert_eq!(dev.read(u64::MAX, 4), Err(AccessError::OutOfRange { offset: u64::MAX }));
    assert_eq!(dev.write(&mut mem, u64::MAX - 1, 1, 0), Err(AccessError::OutOfRange { offset: u64::MAX - 1 }));
}

#[test]
fn write_only_and_unassigned_registers_read_zero_and_read_only_ones_ignore_writes() {
    let mut mem = memory();
    let mut dev = console();
    for off in
        [reg::QUEUE_NOTIFY, reg::INTERRUPT_ACK, reg::DRIVER_FEATURES, reg::QUEUE_SEL, 0x018, 0x0f8, reg::QUEUE_RESET]
    {
        assert_eq!(rd(&dev, off), 0, "offset {off:#x}");
    }
    wr(&mut dev, &mut mem, reg::MAGIC_VALUE, 0);
    wr(&mut dev, &mut mem, reg::DEVICE_ID, 0);
    wr(&mut dev, &mut mem, reg::INTERRUPT_STATUS, 3);
    assert_eq!(rd(&dev, reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rd(&dev, reg::DEVICE_ID), DEVICE_ID_CONSOLE);
    assert_eq!(rd(&dev, reg::INTERRUPT_STATUS), 0);
}

#[test]
fn shared_memory_regions_read_as_none() {
    let dev = console();
    for off in [reg::SHM_LEN_LOW, reg::SHM_LEN_HIGH, reg::SHM_BASE_LOW, reg::SHM_BASE_HIGH] {
        assert_eq!(rd(&dev, off), u32::MAX);
    }
}

#[test]
fn used_buffers_raise_the_interrupt_until_acknowledged() {
    let mut mem = memory();
    let mut dev = console();
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    assert!(!dev.interrupt_pending());
    submit_tx(&mut drv, &mut mem, 1);
    let out = drv.notify(&mut dev, &mut mem, TRANSMITQ);
    assert!(out.interrupt);
    assert!(dev.interrupt_pending());
    assert_eq!(rd(&dev, reg::INTERRUPT_STATUS), INTERRUPT_USED_BUFFER);
    wr(&mut dev, &mut mem, reg::INTERRUPT_ACK, INTERRUPT_CONFIG_CHANGE);
    assert!(dev.interrupt_pending());
    wr(&mut dev, &mut mem, reg::INTERRUPT_ACK, INTERRUPT_USED_BUFFER);
    assert!(!dev.interrupt_pending());
    // Nothing new: a notify raises nothing.
    assert!(!drv.notify(&mut dev, &mut mem, TRANSMITQ).interrupt);
    assert!(!dev.interrupt_pending());
}

#[test]
fn no_interrupt_flag_suppresses_the_used_buffer_interrupt() {
    let mut mem = memory();
    let mut dev = console();
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    mem.write_u16(drv.queues[TRANSMITQ].avail, VIRTQ_AVAIL_F_NO_INTERRUPT).unwrap();
    submit_tx(&mut drv, &mut mem, 2);
    assert_eq!(drv.notify(&mut dev, &mut mem, TRANSMITQ), Outcome::default());
    assert_eq!(drv.used(&mem, TRANSMITQ).len(), 2);
    assert!(!dev.interrupt_pending());
}

#[test]
fn reset_returns_every_register_to_its_initial_state() {
    let mut mem = memory();
    let mut dev = console();
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    submit_tx(&mut drv, &mut mem, 1);
    let _ = drv.notify(&mut dev, &mut mem, TRANSMITQ);
    dev.device_mut().push_input(b"typed").unwrap();
    wr(&mut dev, &mut mem, reg::STATUS, 0);
    assert_eq!(rd(&dev, reg::STATUS), 0);
    assert_eq!(rd(&dev, reg::INTERRUPT_STATUS), 0);
    assert!(!dev.interrupt_pending());
    assert_eq!(dev.driver_features(), 0);
    assert_eq!(dev.device().pending_input(), 0);
    for q in 0..2 {
        wr(&mut dev, &mut mem, reg::QUEUE_SEL, q);
        assert_eq!(rd(&dev, reg::QUEUE_READY), 0);
        assert_eq!(dev.queue(q as usize).unwrap().addresses(), (0, 0, 0));
    }
    // And it can be brought up again.
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    submit_tx(&mut drv, &mut mem, 1);
    assert!(drv.notify(&mut dev, &mut mem, TRANSMITQ).interrupt);
}

#[test]
fn budget_bounds_the_requests_served_per_call() {
    let mut mem = memory();
    let mut dev = console();
    dev.set_budget(2);
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    submit_tx(&mut drv, &mut mem, 5);
    let out = drv.notify(&mut dev, &mut mem, TRANSMITQ);
    assert_eq!(out, Outcome { interrupt: true, more_work: true });
    assert_eq!(dev.device().output(), b"01");
    assert_eq!(dev.poll(&mut mem), Outcome { interrupt: true, more_work: true });
    assert_eq!(dev.poll(&mut mem), Outcome { interrupt: true, more_work: false });
    assert_eq!(dev.device().output(), b"01234");
    assert_eq!(dev.poll(&mut mem), Outcome::default());
}

#[test]
fn budget_that_exactly_drains_the_queue_reports_no_more_work() {
    let mut mem = memory();
    let mut dev = console();
    dev.set_budget(3);
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    submit_tx(&mut drv, &mut mem, 3);
    assert_eq!(drv.notify(&mut dev, &mut mem, TRANSMITQ), Outcome { interrupt: true, more_work: false });
}

#[test]
fn default_budget_serves_a_full_ring_in_one_call() {
    let mut mem = memory();
    let mut dev = console();
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    submit_tx(&mut drv, &mut mem, 8);
    assert_eq!(drv.notify(&mut dev, &mut mem, TRANSMITQ), Outcome { interrupt: true, more_work: false });
    assert_eq!(dev.device().output(), b"01234567");
}

#[test]
fn config_change_notifies_only_a_driver_that_is_up() {
    let mut mem = memory();
    let mut dev = console();
    assert_eq!(dev.config_changed(), Outcome::default());
    assert_eq!(rd(&dev, reg::CONFIG_GENERATION), 1);
    Driver::probe(&mut dev, &mut mem, 0, 8);
    assert!(dev.config_changed().interrupt);
    assert_eq!(rd(&dev, reg::INTERRUPT_STATUS), INTERRUPT_CONFIG_CHANGE);
    assert_eq!(rd(&dev, reg::CONFIG_GENERATION), 2);
}

#[test]
fn deliver_rx_to_a_device_without_receive_path_is_unsupported() {
    let mut mem = memory();
    let mut dev = MmioDevice::new(Block::new(MemDisk::new(8), false));
    Driver::probe(&mut dev, &mut mem, 0, 8);
    assert_eq!(dev.deliver_rx(&mut mem, b"x"), Err(RxError::Unsupported));
}

#[test]
fn boxed_devices_can_be_mixed() {
    let mut mem = memory();
    let mut devs: [MmioDevice<alloc::boxed::Box<dyn crate::Device>>; 2] = [
        MmioDevice::new(alloc::boxed::Box::new(Console::new())),
        MmioDevice::new(alloc::boxed::Box::new(Block::new(MemDisk::new(8), false))),
    ];
    assert_eq!(rd(&devs[0], reg::DEVICE_ID), DEVICE_ID_CONSOLE);
    assert_eq!(rd(&devs[1], reg::DEVICE_ID), DEVICE_ID_BLOCK);
    let drv = Driver::probe(&mut devs[1], &mut mem, 0, 8);
    assert_eq!(drv.queues.len(), 1);
}
