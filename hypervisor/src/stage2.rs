//! A VM's stage-2 translation tables: the generic page-table code
//! (`mm::pagetable`) over table pages from the machine's page allocator,
//! with the geometry and VTCR_EL2 value the CPU needs (from `arch::el2`).

use crate::addr::{Ipa, PhysAddr, PAGE_SIZE};
use crate::arch::{cpu, el2};
use crate::mm::machine_frames;
use crate::mm::pagetable::{Attributes, MapError, PageTable, Stage2, TableMemory};

/// Table pages from the machine's page allocator, remembered so a VM's
/// tables can all be returned when it is destroyed.
#[derive(Default)]
pub struct FrameTables {
    pages: alloc::vec::Vec<PhysAddr>,
}

// SAFETY: pages come from the page allocator (4 KiB aligned, exclusively
// ours until freed) and are zeroed before use; the accessors touch exactly
// one aligned u64 through the identity map, volatile.
unsafe impl TableMemory for FrameTables {
    fn alloc_zeroed_table(&mut self) -> Option<PhysAddr> {
        let page = machine_frames::alloc(1)?;
        cpu::zero(page, PAGE_SIZE);
        self.pages.push(page);
        Some(page)
    }

    fn free_table(&mut self, table: PhysAddr) {
        self.pages.retain(|&p| p != table);
        let _ = machine_frames::free(table, 1);
    }

    fn read_descriptor(&self, table: PhysAddr, index: usize) -> u64 {
        // SAFETY: `table` is a table page from `alloc_zeroed_table`, `index` < 512.
        unsafe { (table.as_u64() as *const u64).add(index).read_volatile() }
    }

    fn write_descriptor(&mut self, table: PhysAddr, index: usize, value: u64) {
        // SAFETY: as in `read_descriptor`.
        unsafe { (table.as_u64() as *mut u64).add(index).write_volatile(value) }
    }
}

/// A VM's stage-2 tables and the VTCR_EL2 value that walks them.
pub struct Stage2Tables {
    table: PageTable<FrameTables, Stage2>,
    pub vtcr: u64,
}

impl Stage2Tables {
    pub fn new() -> Result<Self, MapError> {
        let (bits, level, pa_range) = el2::stage2_geometry();
        let table = PageTable::new(FrameTables::default(), Stage2, bits, level)?;
        Ok(Stage2Tables { table, vtcr: el2::vtcr_value(bits, level, pa_range) })
    }

    pub fn root(&self) -> PhysAddr {
        self.table.root()
    }

    /// Maps `[ipa, ipa+size)` to `[pa, pa+size)` with `attrs`. Only invalid
    /// entries change, so no TLB maintenance is needed.
    pub fn map(&mut self, ipa: Ipa, pa: PhysAddr, size: u64, attrs: Attributes) -> Result<(), MapError> {
        self.table.map(ipa, pa, size, attrs)?;
        el2::publish_stage2_entries();
        Ok(())
    }

    /// Removes `[ipa, ipa+size)` (guest-memory windows, `guestmap`). The
    /// VM's VMID must be in VTTBR_EL2: each removed entry is invalidated by
    /// IPA, on all CPUs, before anything replaces it. The caller then
    /// invalidates the VM's combined stage-1+2 entries (`el2::flush_vm_tlbs`).
    pub fn unmap(&mut self, ipa: Ipa, size: u64) -> Result<(), MapError> {
        self.table.unmap(ipa, size, &mut |ipa, _level| el2::invalidate_ipa(ipa.as_u64()))
    }

    /// Returns every table page to the page allocator (the VM is gone and
    /// its TLB entries invalidated).
    pub fn release(self) {
        for page in self.table.into_memory().pages {
            let _ = machine_frames::free(page, 1);
        }
    }

    #[cfg(test)]
    pub fn translate(&self, ipa: Ipa) -> Option<(PhysAddr, Attributes)> {
        self.table.translate(ipa).map(|(pa, attrs, _)| (pa, attrs))
    }
}
