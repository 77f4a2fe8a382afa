#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/seeds/TARGET/*): real inputs from the
repository (device trees, VM configurations) and, for the targets whose
input is a little program (see fuzz/src/lib.rs: Input), ring states a
driver and a guest really produce. Run from anywhere; overwrites seeds/."""
import os, shutil, struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEEDS = os.path.join(HERE, "seeds")

def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

u8 = lambda v: struct.pack("<B", v)
u16 = lambda v: struct.pack("<H", v)
u32 = lambda v: struct.pack("<I", v)
u64 = lambda v: struct.pack("<Q", v)

# Device trees: QEMU virt with GICv3 and GICv2.
for dtb in ("virt-gicv3.dtb", "virt-gicv2.dtb"):
    blob = open(os.path.join(ROOT, "devtree/tests/fixtures", dtb), "rb").read()
    put("devtree", dtb, blob)
    put("fdt_scan", dtb, blob)

# VM configurations the boot tests use.
tests = os.path.join(ROOT, "scripts/tests")
for f in sorted(os.listdir(tests)):
    if f.endswith(".toml"):
        put("vmconfig", f, open(os.path.join(tests, f), "rb").read())

# A boot bundle as mkbundle writes it (cpio newc): dom0, a config, a guest.
def cpio(files):
    out = b""
    def entry(name, data, mode):
        nonlocal out
        n = name.encode() + b"\0"
        fields = [1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(n), 0]
        out += b"070701" + b"".join(b"%08X" % v for v in fields) + n
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    entry("vms", b"", 0o040755)
    for name, data in files:
        entry(name, data, 0o100644)
    entry("TRAILER!!!", b"", 0)
    return out
control = open(os.path.join(tests, "control.toml"), "rb").read()
put("bundle", "bundle.cpio", cpio([("dom0.img", b"\x00" * 64), ("vms/control.toml", control), ("guests/hvcall.img", b"\x1f\x20\x03\xd5" * 8)]))

# Syndromes: an LDR w5 from the GIC distributor (ISV, SAS word, level-0
# translation fault), an MRS of ICC_SGI1R_EL1, then a stage-1 walk.
def esr(ec, iss): return (ec << 26) | (1 << 25) | iss
put("esr", "ldr-w5", u64(esr(0x24, (1 << 24) | (2 << 22) | (5 << 16) | 4)) + u64(0x3c5) + u64(0x8000_0000) + u8(0))
put("esr", "msr-sgi1r", u64(esr(0x18, (3 << 20) | (5 << 17) | (12 << 10) | (3 << 5) | (11 << 1))) + u64(0x3c5) + u64(0) + u8(6)
    + u64(0x1000) + u64(0) + u64(16 | (16 << 16) | (2 << 30)) + u64((1 << 30) + 0x40) + u64(0x9000_0000)
    + b"\0" * 8 + u64(0x2003) + b"\0" * 0xff0 + u64(0) + u64(0x9000_0003))

# virtio: a console brought up with 8-entry queues (rx at 0x0000/0x1000/
# 0x2000, tx at 0x3000/0x4000/0x5000), "hello\n" in one tx descriptor,
# the avail ring publishing it, a notify, a poll.
def bring_up(queues):
    b = u8(0) + u32(0) + u32(1)
    for size_log2, desc, avail, used in queues:
        b += u8(size_log2) + u16(desc) + u16(avail) + u16(used)
    return b
def mem(at, data):  # op 3: write guest RAM (at most 32 bytes)
    return u8(3) + u16(at) + u8(len(data) - 1) + data
queues = [(3, 0x0000, 0x1000, 0x2000), (3, 0x3000, 0x4000, 0x5000), (3, 0x6000, 0x7000, 0x7800)]
desc = u64(0x4000_8000) + u32(6) + u16(0) + u16(0)
console = u8(0) + u8(0) + bring_up(queues) + mem(0x8000, b"hello\n") + mem(0x3000, desc) + mem(0x4000, u16(0) + u16(1) + u16(0)) + u8(7) + u8(1) + u8(5)
put("virtio", "console-tx", console)
# A block read of sector 0 into a writable buffer: header, data, status.
hdr = u32(0) + u32(0) + u64(0)
chain = (u64(0x4000_8000) + u32(16) + u16(1) + u16(1)
         + u64(0x4000_9000) + u32(512) + u16(3) + u16(2)
         + u64(0x4000_8100) + u32(1) + u16(2) + u16(0))
block = u8(1) + u8(0) + bring_up(queues) + mem(0x8000, hdr) + mem(0x0000, chain[:32]) + mem(0x0020, chain[32:]) + mem(0x1000, u16(0) + u16(1) + u16(0)) + u8(7) + u8(0) + u8(5)
put("virtio", "block-read", block)

# IO rings: a guest's write and read of the test device, then dom0 takes
# them; then a UART read.
def request(write, vm, size_log2, window, offset, data=0):
    return u8(1) + u8(size_log2) + u8(write) + u8(vm - 1) + u16(offset) + u8(window) + (u64(data) if write else b"")
put("ioring", "test-device", u8(0) + u8(2) + request(1, 1, 3, 0, 8, 0xCAFE_F00D) + request(0, 1, 3, 0, 8) + u8(5))
put("ioring", "uart", u8(0) + u8(1) + request(0, 2, 2, 1, 0x18) + u8(5) + u8(3) + u32(7) + u8(5))

# Traps: an LDR w5 of GICD_TYPER, a store to and a load from the window
# dom0 serves, dom0's completion with the request's own sequence number.
def dabt(iss, ipa_kind, offset):
    return u8(0) + u8(0) + u32(iss) + u8(0) + u32(offset) + u8(ipa_kind) + u8(1) + u8(0) + u64(0x1234) + u8(0)
ldr_w5 = (1 << 24) | (2 << 22) | (5 << 16) | 4
str_w3 = (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6) | 4
put("trap", "gic-and-window", dabt(ldr_w5, 0, 4) + dabt(str_w3, 3, 8) + dabt(ldr_w5, 3, 8)
    + u8(3) + u8(1) + u8(1) + u32(0) + u8(1) + u64(0x41))
