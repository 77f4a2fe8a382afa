//! Access to system registers that `aarch64-cpu` does not name (GICv3 CPU
//! interface, MDCR_EL2, VPIDR/VMPIDR_EL2, ...). Callers wrap each use in a
//! small named function so a grep shows every place that changes them.

/// Reads a system register by its assembler name (e.g. `"icc_iar1_el1"`,
/// or the generic `"s3_0_c12_c12_0"` form).
macro_rules! read_sysreg {
    ($name:expr) => {{
        let value: u64;
        // SAFETY: reading a system register has no memory effects; the
        // caller names a register that exists at EL2 on the cores we run on.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack, preserves_flags)) };
        value
    }};
}

/// Writes a system register by its assembler name. The call site's named
/// wrapper documents why the write is safe.
macro_rules! write_sysreg {
    ($name:expr, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: see the calling wrapper: each one writes a register the
        // hypervisor owns with a value valid for it.
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) value, options(nostack, preserves_flags)) };
    }};
}

pub(crate) use read_sysreg;
pub(crate) use write_sysreg;
