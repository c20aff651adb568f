//! The I/O APICs: routing a device's interrupt line to a core.
//!
//! Only what console input needs: program one redirection-table entry
//! (the pure part — which pin, polarity, trigger, the entry's bits — is in
//! `kernel::serialin`). Registers are reached through the direct map, whose
//! 3..4 GiB part (the I/O APIC at `0xfec0_0000` on PCs) is uncached. The
//! destination is a physical APIC id in the entry's 8-bit field, which both
//! APIC modes accept for ids up to 254 (QEMU's x2APIC ids start at 0).

use super::memory::{DIRECT_MAP_LIMIT, phys_to_virt};
use kernel::serialin::{IoApic, Route, find_pin, redirection_entry};

const IOREGSEL: usize = 0x00;
const IOWIN: usize = 0x10;
const IOAPICVER: u32 = 0x01;
const IOREDTBL: u32 = 0x10;

/// The register window of `a`, if the direct map reaches it.
fn base(a: &IoApic) -> Option<*mut u32> {
    (a.phys.is_multiple_of(16) && a.phys.saturating_add(0x20) <= DIRECT_MAP_LIMIT)
        .then(|| phys_to_virt(a.phys) as *mut u32)
}

struct Regs(*mut u32);

impl Regs {
    fn read(&self, reg: u32) -> u32 {
        let base = self.0;
        // SAFETY: `base` is this I/O APIC's register window in the uncached
        // direct map (checked by [`base`]); selecting a register and reading
        // the window has no other effect. Callers hold `LOCK`, so no other
        // core changes the selection in between.
        unsafe {
            base.byte_add(IOREGSEL).write_volatile(reg);
            base.byte_add(IOWIN).read_volatile()
        }
    }

    fn write(&self, reg: u32, value: u32) {
        let base = self.0;
        // SAFETY: as in `read`; the registers written are redirection
        // entries the kernel owns (nothing else programs the I/O APIC).
        unsafe {
            base.byte_add(IOREGSEL).write_volatile(reg);
            base.byte_add(IOWIN).write_volatile(value);
        }
    }

    /// Number of redirection entries.
    fn entries(&self) -> u32 {
        ((self.read(IOAPICVER) >> 16) & 0xff) + 1
    }
}

/// Serialises register selection between cores.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Routes `route` to `vector` on the core with APIC id `apic_id`, through
/// whichever of `apics` serves its GSI. Masked first, then the high half,
/// then the low half (which unmasks), so no half-written entry ever fires.
pub fn route(apics: &[IoApic], route: Route, vector: u8, apic_id: u32) -> Result<(), &'static str> {
    let entry = redirection_entry(vector, apic_id, route)
        .ok_or("the destination APIC id does not fit an I/O APIC entry")?;
    let _held = LOCK.lock();
    let mut spans = alloc::vec::Vec::new();
    for a in apics {
        let regs = Regs(base(a).ok_or("I/O APIC registers outside the direct map")?);
        spans.push((a.gsi_base, regs.entries()));
    }
    let (i, pin) = find_pin(&spans, route.gsi).ok_or("no I/O APIC serves the line's GSI")?;
    let regs = Regs(base(&apics[i]).ok_or("I/O APIC registers outside the direct map")?);
    let reg = IOREDTBL + 2 * pin;
    regs.write(reg, 1 << 16);
    regs.write(reg + 1, (entry >> 32) as u32);
    regs.write(reg, entry as u32);
    Ok(())
}
