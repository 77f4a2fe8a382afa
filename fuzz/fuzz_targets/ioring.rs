//! The IO request rings, from dom0's side: the request ring's indices as a
//! hostile peer may leave them in the shared page, the request slots'
//! bytes (guest-controlled address, size and data), and dom0's backends
//! answering each request (test device, PL011, virtio console and net over
//! the guest's RAM). A rejected index leaves the view unchanged; an
//! accepted one never lets more than `cap` entries be taken; every request
//! gets a completion with its own sequence number.
#![no_main]

use std::collections::BTreeMap;

use host_dom0::backend::{Backends, Hyp, VirtioSpec};
use hv_abi::hypercall::guest::{RAM_BASE, TEST_DEVICE_BASE, UART_BASE, VIRTIO_BASE};
use hv_abi::ioreq::{IoPage, IoRequest, RingIndices, IO_RING_SLOTS};
use hv_fuzz::Input;
use hv_virtio::{GuestMemory, VecMemory};
use libfuzzer_sys::fuzz_target;

/// The guests' RAM, as dom0 reaches it through the hypervisor.
#[derive(Default)]
struct Guests(BTreeMap<u16, VecMemory>);

impl Hyp for Guests {
    fn set_irq(&mut self, _vm: u16, _intid: u32, _level: bool) {}

    fn read_guest(&self, vm: u16, gpa: u64, buf: &mut [u8]) -> Result<(), ()> {
        self.0.get(&vm).ok_or(())?.read(gpa, buf).map_err(drop)
    }

    fn write_guest(&mut self, vm: u16, gpa: u64, data: &[u8]) -> Result<(), ()> {
        self.0.get_mut(&vm).ok_or(())?.write(gpa, data).map_err(drop)
    }
}

/// An address a request names: mostly inside one of the windows dom0 serves.
fn address(input: &mut Input) -> u64 {
    let offset = u64::from(input.u16());
    match input.u8() % 5 {
        0 => TEST_DEVICE_BASE + offset % 0x200,
        1 => UART_BASE + offset % 0x1000,
        2 => VIRTIO_BASE + offset % 0x400,
        3 => RAM_BASE + offset,
        _ => input.u64(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut backends = Backends::new();
    let mut guests = Guests::default();
    for vm in [1u16, 2] {
        backends.attach_test_device(vm);
        backends.attach_uart(vm);
        backends.attach_virtio(vm, vec![VirtioSpec::Console, VirtioSpec::Net { mac: [2, 0, 0, 0, 0, vm as u8] }]);
        guests.0.insert(vm, VecMemory::new(RAM_BASE, 0x1_0000));
    }
    let mut page = IoPage::new();
    // Dom0's private view of the request ring (it consumes), and of the
    // completion ring (it produces).
    let mut req = RingIndices::new(IO_RING_SLOTS).expect("the ABI's capacity");
    let mut cpl = RingIndices::new(IO_RING_SLOTS).expect("the ABI's capacity");
    let mut seq = 0u64;
    let mut steps = 0;
    while !input.is_empty() && steps < 2048 {
        steps += 1;
        match input.u8() % 6 {
            // The producer publishes requests: well-formed ones built from
            // the input, or raw slot bytes.
            0 | 1 => {
                let n = input.u8() % 8;
                for _ in 0..n {
                    let slot = page.req.prod as usize % IO_RING_SLOTS as usize;
                    page.requests[slot] = if input.bool() {
                        seq += 1;
                        let size = 1 << (input.u8() % 4);
                        let mask = hv_abi::ioreq::size_mask(size);
                        if input.bool() {
                            IoRequest::new(seq, 1 + u16::from(input.bool()), 0, hv_abi::ioreq::Direction::Write, size, address(&mut input), input.u64() & mask)
                        } else {
                            IoRequest::new(seq, 1 + u16::from(input.bool()), 0, hv_abi::ioreq::Direction::Read, size, address(&mut input), 0)
                        }
                    } else {
                        let mut bytes = [0u8; IoRequest::SIZE];
                        let raw = input.bytes(IoRequest::SIZE);
                        bytes[..raw.len()].copy_from_slice(raw);
                        IoRequest::from_bytes(&bytes)
                    };
                    page.req.prod = page.req.prod.wrapping_add(1);
                }
            }
            // A hostile or broken peer scribbles on the indices.
            2 => page.req.prod = input.u32(),
            3 => page.cpl.cons = input.u32(),
            // The guest writes its own RAM (virtio rings and buffers).
            4 => {
                let vm = 1 + u16::from(input.bool());
                let at = RAM_BASE + u64::from(input.u16());
                let len = usize::from(input.u8() % 32);
                let bytes = input.bytes(len);
                let _ = guests.0.get_mut(&vm).expect("guest").write(at, bytes);
            }
            // Dom0 takes what the ring holds, as `ioreq.rs` does.
            _ => {
                let before = req;
                match req.observe_prod(page.req.prod) {
                    Err(_) => {
                        assert_eq!(req, before, "a rejected index changes nothing");
                        continue;
                    }
                    Ok(()) => assert!(req.len() <= req.cap()),
                }
                let mut taken = 0;
                while let Some(slot) = req.consumer_slot() {
                    assert!(slot < IO_RING_SLOTS as usize);
                    let request = page.requests[slot];
                    page.req.cons = req.consumed();
                    taken += 1;
                    assert!(taken <= IO_RING_SLOTS, "more entries than the ring holds");
                    let completion = backends.handle(&request, &mut guests);
                    assert_eq!(completion.seq, request.seq, "the completion answers its request");
                    if request.is_posted() {
                        continue;
                    }
                    let before = cpl;
                    if cpl.observe_cons(page.cpl.cons).is_err() {
                        assert_eq!(cpl, before);
                    }
                    if let Some(out) = cpl.producer_slot() {
                        page.completions[out] = completion;
                        page.cpl.prod = cpl.produced();
                    }
                }
                while backends.poll_pending(&mut guests) {}
                backends.take_output(|_, _| {}, &mut guests);
            }
        }
    }
});
