//! Console input without the hardware: the bounded receive buffer the
//! serial interrupt fills and `ConsoleRead` empties, and the routing of an
//! ISA interrupt line (COM1's IRQ 4) through an I/O APIC from the MADT's
//! interrupt source overrides.
//!
//! The buffer never makes its writer wait or fail: a byte that finds it
//! full is dropped and counted (`dropped`), which is the only thing
//! overflow does. Reading is two steps, [`InputRing::peek`] then
//! [`InputRing::consume`], so that the machine half can copy to user memory
//! between them without holding the buffer's lock, and keep the bytes if
//! the copy fails.

/// The receive buffer: `N` bytes in a ring.
pub struct InputRing<const N: usize> {
    buf: [u8; N],
    /// Bytes taken out so far (free-running).
    head: u64,
    /// Bytes put in so far (free-running).
    tail: u64,
    /// Bytes dropped because the ring was full.
    dropped: u64,
}

impl<const N: usize> Default for InputRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> InputRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        InputRing { buf: [0; N], head: 0, tail: 0, dropped: 0 }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        (self.tail - self.head) as usize
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Bytes dropped so far because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes accepted so far (dropped ones not counted).
    pub fn received(&self) -> u64 {
        self.tail
    }

    /// Appends `byte`; `false` (and the byte counted as dropped) if full.
    pub fn push(&mut self, byte: u8) -> bool {
        if self.len() == N {
            self.dropped += 1;
            return false;
        }
        self.buf[(self.tail % N as u64) as usize] = byte;
        self.tail += 1;
        true
    }

    /// Copies the oldest waiting bytes into `out` without taking them;
    /// returns how many.
    pub fn peek(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len());
        for (i, slot) in out[..n].iter_mut().enumerate() {
            *slot = self.buf[((self.head + i as u64) % N as u64) as usize];
        }
        n
    }

    /// Takes the `n` oldest bytes (at most what is waiting).
    pub fn consume(&mut self, n: usize) {
        self.head += (n.min(self.len())) as u64;
    }

    /// Forgets every waiting byte (the reader changed: what the old one
    /// did not read is not the new one's).
    pub fn clear(&mut self) {
        self.head = self.tail;
    }
}

/// One I/O APIC as the MADT lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    /// Its registers' physical address.
    pub phys: u64,
    /// The first global system interrupt it serves.
    pub gsi_base: u32,
}

/// An ISA interrupt source override of the MADT: ISA `irq` arrives on
/// global system interrupt `gsi` with the MPS INTI `flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaOverride {
    /// The ISA line.
    pub irq: u8,
    /// Where it arrives.
    pub gsi: u32,
    /// Bits 0..2 polarity (0 bus default, 1 active high, 3 active low),
    /// bits 2..4 trigger mode (0 bus default, 1 edge, 3 level).
    pub flags: u16,
}

/// Where and how an ISA line arrives at the I/O APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The global system interrupt.
    pub gsi: u32,
    /// Active low (ISA's default is active high).
    pub active_low: bool,
    /// Level-triggered (ISA's default is edge).
    pub level: bool,
}

/// The route of ISA line `irq`: its override if the MADT has one (the
/// first for that line), else identity-mapped, active high, edge.
pub fn isa_route(irq: u8, overrides: &[IsaOverride]) -> Route {
    match overrides.iter().find(|o| o.irq == irq) {
        Some(o) => Route {
            gsi: o.gsi,
            active_low: o.flags & 0b11 == 0b11,
            level: (o.flags >> 2) & 0b11 == 0b11,
        },
        None => Route { gsi: u32::from(irq), active_low: false, level: false },
    }
}

/// The 64-bit I/O APIC redirection-table entry that delivers `route` as
/// `vector` to the local APIC with id `apic_id`: fixed delivery, physical
/// destination, unmasked. `None` if the id does not fit the entry's 8-bit
/// destination field (x2APIC ids above 254 need interrupt remapping) or the
/// vector is one of the exception vectors.
pub fn redirection_entry(vector: u8, apic_id: u32, route: Route) -> Option<u64> {
    if apic_id > 254 || vector < 32 {
        return None;
    }
    let mut low = u64::from(vector);
    if route.active_low {
        low |= 1 << 13;
    }
    if route.level {
        low |= 1 << 15;
    }
    Some(low | u64::from(apic_id) << 56)
}

/// Which I/O APIC (index into `apics`, each `(gsi_base, entries)`) serves
/// `gsi`, and the entry's index there.
pub fn find_pin(apics: &[(u32, u32)], gsi: u32) -> Option<(usize, u32)> {
    apics.iter().enumerate().find_map(|(i, &(base, entries))| {
        let pin = gsi.checked_sub(base)?;
        (pin < entries).then_some((i, pin))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn overflow_drops_and_counts_only() {
        let mut r = InputRing::<4>::new();
        for b in 1..=6u8 {
            r.push(b);
        }
        assert_eq!((r.len(), r.dropped(), r.received()), (4, 2, 4));
        let mut out = [0u8; 8];
        assert_eq!(r.peek(&mut out), 4);
        assert_eq!(&out[..4], &[1, 2, 3, 4]);
        // Peeking takes nothing.
        assert_eq!(r.len(), 4);
        r.consume(3);
        assert!(r.push(7));
        assert_eq!(r.peek(&mut out), 2);
        assert_eq!(&out[..2], &[4, 7]);
        r.consume(100);
        assert!(r.is_empty());
        r.push(9);
        r.clear();
        assert!(r.is_empty());
        assert_eq!(r.received(), 6);
    }

    proptest! {
        /// Against a model queue: bytes come out in order, none invented,
        /// the dropped ones exactly those pushed while full.
        #[test]
        fn ring_matches_a_queue(ops in proptest::collection::vec((any::<bool>(), any::<u8>(), 0usize..6), 0..300)) {
            let mut r = InputRing::<5>::new();
            let mut model = std::collections::VecDeque::new();
            let mut dropped = 0;
            for (push, byte, n) in ops {
                if push {
                    if model.len() == 5 { dropped += 1; } else { model.push_back(byte); }
                    r.push(byte);
                } else {
                    let mut out = [0u8; 6];
                    let got = r.peek(&mut out[..n]);
                    let want: std::vec::Vec<u8> = model.iter().take(n).copied().collect();
                    prop_assert_eq!(&out[..got], &want[..]);
                    r.consume(got);
                    model.drain(..got);
                }
                prop_assert_eq!(r.len(), model.len());
                prop_assert_eq!(r.dropped(), dropped);
            }
        }
    }

    #[test]
    fn routes() {
        // QEMU's q35 MADT: IRQ 0 -> GSI 2, IRQ 9 level active high.
        let o = [
            IsaOverride { irq: 0, gsi: 2, flags: 0 },
            IsaOverride { irq: 9, gsi: 9, flags: 0b1101 },
            IsaOverride { irq: 4, gsi: 20, flags: 0b1111 },
        ];
        assert_eq!(isa_route(4, &o[..2]), Route { gsi: 4, active_low: false, level: false });
        assert_eq!(isa_route(0, &o), Route { gsi: 2, active_low: false, level: false });
        assert_eq!(isa_route(9, &o), Route { gsi: 9, active_low: false, level: true });
        assert_eq!(isa_route(4, &o), Route { gsi: 20, active_low: true, level: true });
        let edge = isa_route(4, &[]);
        assert_eq!(redirection_entry(0x34, 3, edge), Some(0x34 | 3 << 56));
        assert_eq!(redirection_entry(0x34, 0, isa_route(4, &o)), Some(0x34 | 1 << 13 | 1 << 15));
        assert_eq!(redirection_entry(0x34, 255, edge), None);
        assert_eq!(redirection_entry(14, 0, edge), None);
        assert_eq!(find_pin(&[(0, 24)], 4), Some((0, 4)));
        assert_eq!(find_pin(&[(0, 24), (24, 24)], 30), Some((1, 6)));
        assert_eq!(find_pin(&[(0, 24)], 24), None);
        assert_eq!(find_pin(&[(8, 24)], 4), None);
    }
}
