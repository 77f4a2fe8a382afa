//! The virtio-mmio devices dom0 serves, driven by a hostile guest: register
//! accesses, and rings, descriptors and buffers written anywhere in a small
//! guest RAM. Nothing panics, loops without bound or writes outside RAM
//! (`VecMemory` refuses that, and the device must cope).
#![no_main]

use hv_fuzz::Input;
use hv_virtio::mmio::{reg, status};
use hv_virtio::{Block, Console, Device, GuestMemory, MemDisk, MmioDevice, Net, VecMemory};
use libfuzzer_sys::fuzz_target;

/// Guest RAM: small, so that the fuzzer's addresses land in it.
const BASE: u64 = 0x4000_0000;
const RAM: usize = 0x1_0000;

const REGS: [u64; 20] = [
    reg::DEVICE_FEATURES_SEL,
    reg::DRIVER_FEATURES,
    reg::DRIVER_FEATURES_SEL,
    reg::QUEUE_SEL,
    reg::QUEUE_NUM,
    reg::QUEUE_READY,
    reg::QUEUE_NOTIFY,
    reg::INTERRUPT_ACK,
    reg::STATUS,
    reg::QUEUE_DESC_LOW,
    reg::QUEUE_DESC_HIGH,
    reg::QUEUE_DRIVER_LOW,
    reg::QUEUE_DRIVER_HIGH,
    reg::QUEUE_DEVICE_LOW,
    reg::QUEUE_DEVICE_HIGH,
    reg::SHM_SEL,
    reg::QUEUE_RESET,
    reg::CONFIG_GENERATION,
    0x100,
    0x108,
];

fn w32<D: Device>(dev: &mut MmioDevice<D>, mem: &mut VecMemory, offset: u64, value: u32) {
    let _ = dev.write(mem, offset, 4, u64::from(value));
}

/// A driver's bring-up as Linux does it, with the input choosing queue
/// sizes and where in RAM each queue's three parts lie, so that the
/// fuzzer spends its bytes on ring contents rather than on the handshake.
fn bring_up<D: Device>(dev: &mut MmioDevice<D>, mem: &mut VecMemory, input: &mut Input) {
    w32(dev, mem, reg::STATUS, 0);
    w32(dev, mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    for (sel, features) in [(0, input.u32()), (1, 1 | input.u32())] {
        w32(dev, mem, reg::DRIVER_FEATURES_SEL, sel);
        w32(dev, mem, reg::DRIVER_FEATURES, features);
    }
    w32(dev, mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    for queue in 0..3u32 {
        w32(dev, mem, reg::QUEUE_SEL, queue);
        w32(dev, mem, reg::QUEUE_NUM, 1 << (input.u8() % 9));
        for low in [reg::QUEUE_DESC_LOW, reg::QUEUE_DRIVER_LOW, reg::QUEUE_DEVICE_LOW] {
            w32(dev, mem, low, (BASE + u64::from(input.u16()) / 8 * 8) as u32);
            w32(dev, mem, low + 4, 0);
        }
        w32(dev, mem, reg::QUEUE_READY, 1);
    }
    w32(dev, mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
}

fn run<D: Device>(mut dev: MmioDevice<D>, input: &mut Input, drain: impl Fn(&mut D)) {
    let mut mem = VecMemory::new(BASE, RAM);
    if input.bool() {
        dev.set_budget(1 + usize::from(input.u8() % 16));
    }
    let mut steps = 0;
    while !input.is_empty() && steps < 4096 {
        steps += 1;
        match input.u8() % 8 {
            0 => bring_up(&mut dev, &mut mem, input),
            1 => {
                let pick = input.u8();
                let offset = if pick & 0x80 != 0 { u64::from(pick) * 4 % 0x200 } else { REGS[usize::from(pick) % REGS.len()] };
                let size = [4, 4, 4, 1, 2, 8, 0, 3][usize::from(input.u8() % 8)];
                let value = match input.u8() % 4 {
                    0 => u64::from(input.u8() % 4),
                    1 => BASE + u64::from(input.u16()),
                    _ => input.u64(),
                };
                let _ = dev.write(&mut mem, offset, size, value);
            }
            2 => {
                let _ = dev.read(u64::from(input.u16()) % 0x400, [1, 2, 4, 8][usize::from(input.u8() % 4)]);
            }
            // Rings, descriptors, buffers: any bytes anywhere in RAM.
            3 | 4 => {
                let at = BASE + u64::from(input.u16());
                let len = usize::from(input.u8() % 32) + 1;
                let bytes = input.bytes(len);
                let _ = mem.write(at, bytes);
            }
            5 => {
                let _ = dev.poll(&mut mem);
            }
            6 => {
                let len = usize::from(input.u8() % 64);
                let _ = dev.deliver_rx(&mut mem, input.bytes(len));
            }
            _ => {
                w32(&mut dev, &mut mem, reg::QUEUE_NOTIFY, u32::from(input.u8() % 4));
                drain(dev.device_mut());
            }
        }
        let _ = dev.interrupt_pending();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.u8() % 4 {
        0 => run(MmioDevice::new(Console::new()), &mut input, |c| drop(c.take_output())),
        1 => run(MmioDevice::new(Block::new(MemDisk::new(64), false)), &mut input, |_| {}),
        2 => run(MmioDevice::new(Block::new(MemDisk::new(16), true)), &mut input, |_| {}),
        _ => run(MmioDevice::new(Net::new([2, 0, 0, 0, 0, 1])), &mut input, |n| while n.take_tx().is_some() {}),
    }
});
