//! Domain control: creating, starting and destroying guests, and the
//! bookkeeping that must balance (pages, placements, the VM table).

use hv_abi::hypercall::{guest, CopyDirection, Error, Function, VmState};

use super::support::*;
use crate::addr::Ipa;
use crate::arch::fake::{self, Event};
use crate::mm::machine_frames;
use crate::vm::{self, VmId};

#[test]
fn vm_create_refuses_bad_arguments_and_leaks_nothing() {
    let m = Machine::take();
    let d0 = dom0();
    let free = m.free_pages();
    let name = d0.ram[0].ipa.as_u64() + 0x1000;
    poke(&d0, name, b"bad");
    let cases: [(&str, [u64; 6]); 8] = [
        ("no vCPU", [0, 2 << 20, name, 3, 0, 0]),
        ("more vCPUs than a vGIC has", [9, 2 << 20, name, 3, 0, 0]),
        ("memory not in 2 MiB chunks", [1, 3 << 20, name, 3, 0, 0]),
        ("more memory than a guest may have", [1, 8 << 30, name, 3, 0, 0]),
        ("empty name", [1, 2 << 20, name, 0, 0, 0]),
        ("pinned to offline CPUs only", [1, 2 << 20, name, 3, 0, 0b1100]),
        ("weight out of range", [1, 2 << 20, name, 3, 1 << 20, 0]),
        ("name outside dom0's RAM", [1, 2 << 20, 0x10, 3, 0, 0]),
    ];
    for (why, args) in cases {
        let (r, _) = hypercall(&d0, Function::VmCreate, &args);
        assert!(r == Error::InvalidParameter.code() || r == Error::BadAddress.code(), "{why}: {r}");
    }
    assert_eq!(m.free_pages(), free, "refused creates allocate nothing");
    assert!(vm::guest_ids().is_empty());
}

#[test]
fn vm_create_out_of_memory_gives_everything_back() {
    let m = Machine::take();
    let d0 = dom0();
    let free = m.free_pages();
    // More than the fake machine has left.
    assert_eq!(create_guest(&d0, "big", 2, 64 << 20, 0).err(), Some(Error::NoMemory.code()));
    assert_eq!(m.free_pages(), free, "the chunks already taken are returned");
    // The placement count is balanced too: the next guest goes where an
    // empty machine would put it (CPU 1, dom0 being on CPU 0).
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("fits");
    assert_eq!(g.vcpus[0].pcpu(), 1);
}

#[test]
fn vm_create_out_of_memory_after_its_ram_gives_everything_back() {
    let m = Machine::take();
    let d0 = dom0();
    // Hold every free page (2 MiB blocks, then single pages), then give
    // back the guest's RAM (two blocks) and `extra` pages: with few extra
    // pages its RAM fits but its stolen-time page or stage-2 tables do not.
    let mut blocks = alloc::vec::Vec::new();
    while let Some(pa) = machine_frames::alloc(512) {
        blocks.push(pa);
    }
    let mut pages = alloc::vec::Vec::new();
    while let Some(pa) = machine_frames::alloc(1) {
        pages.push(pa);
    }
    assert!(blocks.len() >= 2 && pages.len() >= 16, "the fake machine has room to play with");
    for pa in blocks.drain(..2) {
        machine_frames::free(pa, 512).expect("ours");
    }
    let mut failed_midway = 0;
    for extra in 0..16 {
        let free = m.free_pages();
        assert_eq!(free, 2 * 512 + extra);
        match create_guest(&d0, "tight", 2, 4 << 20, 0) {
            Err(code) => {
                assert_eq!(code, Error::NoMemory.code(), "{extra} extra pages");
                assert_eq!(m.free_pages(), free, "{extra} extra pages: everything taken is returned");
                failed_midway += 1;
            }
            Ok(g) => {
                let id = g.id;
                drop(g);
                assert_eq!(hypercall(&d0, Function::VmDestroy, &[id.0 as u64]).0, 0);
                assert_eq!(m.free_pages(), free, "destroy returns what the create took");
                break;
            }
        }
        machine_frames::free(pages.pop().expect("held"), 1).expect("ours");
    }
    assert!(failed_midway >= 2, "the stolen-time page and the stage-2 tables each need a page");
    assert!(failed_midway < 16, "with 16 extra pages the guest fits");
    assert!(vm::guest_ids().is_empty());
    for pa in blocks {
        machine_frames::free(pa, 512).expect("ours");
    }
    for pa in pages {
        machine_frames::free(pa, 1).expect("ours");
    }
}

#[test]
fn created_guest_has_its_ram_mapped_at_stage_2_and_zeroed() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 2, 4 << 20, 0).expect("created");
    assert_eq!(g.state(), VmState::Created);
    assert_eq!(g.ram_size(), 4 << 20);
    let stage2 = g.stage2.lock();
    let tables = stage2.as_ref().expect("tables");
    for chunk in &g.ram {
        let (pa, _) = tables.translate(chunk.ipa).expect("RAM mapped");
        assert_eq!(pa, chunk.pa);
    }
    assert!(tables.translate(Ipa::new(guest::RAM_BASE + (4 << 20))).is_none(), "nothing past its RAM");
    assert!(tables.translate(Ipa::new(guest::GICD_BASE)).is_none(), "the distributor traps");
    assert!(peek(&g, guest::RAM_BASE, 64).iter().all(|&b| b == 0));
    // Two vCPUs spread over the two CPUs.
    let mut cpus: alloc::vec::Vec<usize> = g.vcpus.iter().map(|v| v.pcpu()).collect();
    cpus.sort();
    assert_eq!(cpus, [0, 1]);
}

#[test]
fn destroy_returns_every_page_and_drops_stale_translations() {
    let m = Machine::take();
    let d0 = dom0();
    let free = m.free_pages();
    let g = create_guest(&d0, "g", 2, 4 << 20, 0).expect("created");
    poke(&g, guest::RAM_BASE, b"secret");
    let ram = g.ram.clone();
    let id = g.id;
    drop(g);
    fake::take_events();
    assert_eq!(hypercall(&d0, Function::VmDestroy, &[id.0 as u64]).0, 0);
    assert!(vm::get(id).is_none());
    assert_eq!(m.free_pages(), free, "RAM and stage-2 tables all returned");
    let events = fake::take_events();
    assert!(events.contains(&Event::FlushVmTlbs), "{events:?}");
    // No VM's data outlives it.
    for chunk in ram {
        // SAFETY: the chunk is back in the test's RAM block, which lives
        // for the whole run.
        let bytes = unsafe { core::slice::from_raw_parts(chunk.pa.as_u64() as *const u8, 16) };
        assert!(bytes.iter().all(|&b| b == 0));
    }
    // The id is free again.
    let again = create_guest(&d0, "again", 1, 2 << 20, 0).expect("created");
    assert_eq!(again.id, id);
}

#[test]
fn control_calls_check_the_target_and_its_state() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    let id = g.id.0 as u64;
    assert_eq!(hypercall(&d0, Function::VmStart, &[id]).0, Error::InvalidParameter.code(), "no entry point yet");
    assert_eq!(hypercall(&d0, Function::VmSetEntry, &[id, 0, 0x10, 0]).0, Error::BadAddress.code(), "entry outside its RAM");
    assert_eq!(hypercall(&d0, Function::VmSetEntry, &[id, 5, guest::RAM_BASE, 0]).0, Error::InvalidParameter.code(), "no vCPU 5");
    assert_eq!(hypercall(&d0, Function::VmSetEntry, &[id, 0, guest::RAM_BASE, 0]).0, 0);
    assert_eq!(hypercall(&d0, Function::VmPause, &[id]).0, Error::Busy.code(), "not running");
    assert_eq!(hypercall(&d0, Function::VmStart, &[id]).0, 0);
    assert_eq!(g.state(), VmState::Running);
    assert_eq!(hypercall(&d0, Function::VmStart, &[id]).0, Error::Busy.code(), "already started");
    assert_eq!(hypercall(&d0, Function::VmPause, &[id]).0, 0);
    assert_eq!(g.state(), VmState::Paused);
    assert_eq!(hypercall(&d0, Function::VmUnpause, &[id]).0, 0);
    for bad in [0u64, 99, 1 << 20] {
        assert_eq!(hypercall(&d0, Function::VmStart, &[bad]).0, Error::InvalidParameter.code(), "VM {bad}: dom0 or none");
    }
}

#[test]
fn vm_copy_moves_bytes_only_between_the_two_vms_ram() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 4 << 20, 0).expect("created");
    let id = g.id.0 as u64;
    let buf = d0.ram[0].ipa.as_u64() + 0x2000;
    poke(&d0, buf, b"to the guest");
    // Across the 2 MiB chunk boundary of the guest.
    let at = guest::RAM_BASE + (2 << 20) - 4;
    assert_eq!(hypercall(&d0, Function::VmCopy, &[id, at, buf, 12, CopyDirection::ToGuest as u64]).0, 0);
    assert_eq!(peek(&g, at, 4), b"to t");
    assert_eq!(peek(&g, at + 4, 8), b"he guest");
    let back = buf + 0x100;
    assert_eq!(hypercall(&d0, Function::VmCopy, &[id, at, back, 12, CopyDirection::FromGuest as u64]).0, 0);
    assert_eq!(peek(&d0, back, 12), b"to the guest");
    let past = guest::RAM_BASE + (4 << 20) - 4;
    assert_eq!(hypercall(&d0, Function::VmCopy, &[id, past, buf, 8, 0]).0, Error::BadAddress.code(), "runs off the guest's RAM");
    assert_eq!(hypercall(&d0, Function::VmCopy, &[id, at, 0x10, 8, 0]).0, Error::BadAddress.code(), "not dom0's RAM");
    assert_eq!(hypercall(&d0, Function::VmCopy, &[id, at, buf, 8, 7]).0, Error::InvalidParameter.code(), "no such direction");
    assert_eq!(hypercall(&d0, Function::VmCopy, &[id, at, buf, (1 << 20) + 1, 0]).0, Error::InvalidParameter.code(), "over MAX_COPY");
}

#[test]
fn io_map_refuses_windows_over_ram_the_gic_or_another_window() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    let id = g.id.0 as u64;
    let window = 0x0a00_0000;
    assert_eq!(hypercall(&d0, Function::IoMap, &[id, window, 0x1000, 0]).0, 0);
    assert_eq!(hypercall(&d0, Function::IoMap, &[id, window, 0x1000, 0]).0, Error::InvalidParameter.code(), "overlaps itself");
    assert_eq!(hypercall(&d0, Function::IoMap, &[id, guest::RAM_BASE, 0x1000, 0]).0, Error::InvalidParameter.code(), "RAM");
    assert_eq!(hypercall(&d0, Function::IoMap, &[id, guest::GICD_BASE, 0x1000, 0]).0, Error::InvalidParameter.code(), "GICD");
    assert_eq!(hypercall(&d0, Function::IoMap, &[id, window + 0x1001, 0x1000, 0]).0, Error::InvalidParameter.code(), "unaligned");
    assert_eq!(hypercall(&d0, Function::IoMap, &[id, window + 0x2000, 0x1000, 0x80]).0, Error::InvalidParameter.code(), "unknown flag");
    assert_eq!(hypercall(&d0, Function::IoMap, &[id, u64::MAX & !0xfff, 0x2000, 0]).0, Error::InvalidParameter.code(), "wraps");
    // Dom0 may take the console UART over, whole.
    assert_eq!(hypercall(&d0, Function::IoMap, &[id, guest::UART_BASE, guest::UART_SIZE, 0]).0, 0);
    assert_eq!(g.forwarded_at(window + 8).map(|w| w.base), Some(window));
    let _ = VmId(0);
}

#[test]
fn guest_map_gives_dom0_a_window_that_destroy_revokes_before_freeing() {
    let m = Machine::take();
    let d0 = dom0();
    let free = m.free_pages();
    let g = create_guest(&d0, "g", 1, 4 << 20, 0).expect("created");
    let id = g.id.0 as u64;
    let window = 0x60_0000_0000u64;
    // Only the guest's RAM, page-aligned, nowhere dom0 has something.
    assert_eq!(hypercall(&d0, Function::GuestMap, &[id, window, guest::GICD_BASE, 0x1000]).0, Error::BadAddress.code(), "not RAM");
    assert_eq!(hypercall(&d0, Function::GuestMap, &[id, d0.ram[0].ipa.as_u64(), guest::RAM_BASE, 0x1000]).0, Error::InvalidParameter.code(), "over dom0's RAM");
    assert_eq!(hypercall(&d0, Function::GuestMap, &[id, window, guest::RAM_BASE, 4 << 20]).0, 0);
    {
        let stage2 = d0.stage2.lock();
        let (pa, _) = stage2.as_ref().expect("tables").translate(Ipa::new(window + (2 << 20))).expect("mapped");
        assert_eq!(pa, g.ram[1].pa, "the window shows the guest's second chunk");
    }
    drop(g);
    fake::take_events();
    assert_eq!(hypercall(&d0, Function::VmDestroy, &[id]).0, 0);
    let events = fake::take_events();
    let first_flush = events.iter().position(|e| *e == Event::FlushVmTlbs).expect("TLBs flushed");
    assert!(events[..first_flush].iter().any(|e| matches!(e, Event::InvalidateIpa { .. })), "each removed entry invalidated: {events:?}");
    assert!(events[..first_flush].contains(&Event::Stage2 { vmid: d0.vmid }), "with dom0's VMID loaded: {events:?}");
    assert!(d0.stage2.lock().as_ref().expect("tables").translate(Ipa::new(window)).is_none(), "window gone");
    // Dom0's stage-2 tables may keep the table pages the window needed.
    assert!(free - m.free_pages() <= 4, "the guest's RAM is back: {} pages short", free - m.free_pages());
}
