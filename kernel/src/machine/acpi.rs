//! ACPI: the MADT's list of processors, its I/O APICs and its ISA
//! interrupt source overrides (console input routes COM1's IRQ 4 with them).
//!
//! Tables are read through the direct map (the [`AcpiHandler`] needs no
//! mapping work). The RSDP comes from the PVH start info, or, if the loader
//! left it out, from the BIOS areas the `acpi` crate searches.

use super::memory::{DIRECT_MAP_LIMIT, phys_to_virt};
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use alloc::vec::Vec;
use core::ptr::NonNull;

#[derive(Clone, Copy)]
struct DirectMap;

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        assert!(
            (phys as u64).saturating_add(size as u64) <= DIRECT_MAP_LIMIT,
            "ACPI table at {phys:#x} lies outside the direct map"
        );
        let virt =
            NonNull::new(phys_to_virt(phys as u64) as *mut T).expect("direct map is non-null");
        // SAFETY: the region lies in the direct map (checked), which maps
        // physical memory for the kernel's lifetime; the crate only reads it.
        unsafe { PhysicalMapping::new(phys, virt, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// The processors the firmware lists.
pub struct Processors {
    /// Local APIC ids of the enabled (or online-capable) processors, in MADT
    /// order, which is the order to start them in.
    pub apic_ids: Vec<u32>,
    /// The I/O APICs.
    pub io_apics: Vec<kernel::serialin::IoApic>,
    /// The ISA interrupt source overrides.
    pub isa_overrides: Vec<kernel::serialin::IsaOverride>,
}

/// Reads the MADT. `rsdp_phys` is 0 when the loader gave none.
pub fn processors(rsdp_phys: u64) -> Result<Processors, &'static str> {
    // SAFETY: the address comes from the PVH start info (or the crate's BIOS
    // search), points at an RSDP the crate validates by signature and
    // checksum, and all of it is read through the direct map.
    let tables = unsafe {
        if rsdp_phys != 0 {
            AcpiTables::from_rsdp(DirectMap, rsdp_phys as usize)
        } else {
            AcpiTables::search_for_rsdp_bios(DirectMap)
        }
    }
    .map_err(|_| "no valid ACPI RSDP")?;
    let madt = tables.find_table::<Madt>().map_err(|_| "no MADT")?;
    let mut apic_ids = Vec::new();
    let mut io_apics = Vec::new();
    let mut isa_overrides = Vec::new();
    for entry in madt.get().entries() {
        let (id, flags) = match entry {
            MadtEntry::LocalApic(e) => (u32::from(e.apic_id), e.flags),
            MadtEntry::LocalX2Apic(e) => (e.x2apic_id, e.flags),
            MadtEntry::IoApic(e) => {
                io_apics.push(kernel::serialin::IoApic {
                    phys: u64::from(e.io_apic_address),
                    gsi_base: e.global_system_interrupt_base,
                });
                continue;
            }
            MadtEntry::InterruptSourceOverride(e) if e.bus == 0 => {
                isa_overrides.push(kernel::serialin::IsaOverride {
                    irq: e.irq,
                    gsi: e.global_system_interrupt,
                    flags: e.flags,
                });
                continue;
            }
            _ => continue,
        };
        // Bit 0: enabled; bit 1: online capable.
        if flags & 0b11 != 0 && !apic_ids.contains(&id) {
            apic_ids.push(id);
        }
    }
    if apic_ids.is_empty() {
        return Err("MADT lists no processor");
    }
    Ok(Processors { apic_ids, io_apics, isa_overrides })
}
