//! Everything that touches the hardware.
//!
//! `unsafe` in the kernel lives here and only here, in these modules:
//!
//! | module | owns | unsafe for |
//! |---|---|---|
//! | [`boot`] | PVH entry, boot page tables, AP trampoline | assembly, linker symbols |
//! | [`cpu`] | port I/O, MSRs, `rdtsc`, halting, leaving QEMU | privileged instructions |
//! | [`console`] | the serial port and the `log` backend | port I/O |
//! | [`memory`] | the direct map, frame allocator instance, kernel heap | raw physical memory |
//! | [`percpu`] | per-core state reached through GS | GS base, `CpuLocal` |
//! | [`gdt`] | per-core GDT, TSS and IST stacks | loading descriptor tables |
//! | [`interrupts`] | IDT, entry stubs, trap frames, exception reports | assembly, `lidt` |
//! | [`apic`] | local APIC (x2APIC or xAPIC), timer, IPIs | APIC registers |
//! | [`time`] | TSC frequency, PIT calibration, bounded waits | PIT ports |
//! | [`acpi`] | MADT: the list of processors | firmware tables |
//! | [`smp`] | INIT-SIPI-SIPI bring-up of application processors | trampoline copy |
//! | [`mailbox`] | per-core message queues, IPI wake-up, acknowledgements | — |
//! | [`paging`] | environment page tables | page-table memory, CR3 |
//! | [`env`] | environments, frame/mapping secure bindings, user copies | user memory through the direct map |
//! | [`sched`] | vCPUs, run queues, time slots, protected control transfer, entering and leaving ring 3, upcalls | stack switches |
//! | [`slots`] | the time vectors' shared schedule pages | — |
//! | [`syscall`] | the `syscall` entry and dispatcher | entry stub, MSRs |
//! | [`tlb`] | PCIDs and cross-core TLB shootdown | CR4 |
//! | [`uring`] | ring memory, ring operations, timers, notifications, predicate memory | pinned shared frames |
//! | [`panic`] | panic report, backtrace, failure exit | frame-pointer walk |
//!
//! [`start`] is the bootstrap processor's path from the PVH entry to the
//! mode the command line chose; `ktest` and `bench` hold the in-kernel tests
//! and benchmarks.

pub mod acpi;
pub mod apic;
pub mod bench;
pub mod boot;
pub mod console;
pub mod cpu;
pub mod env;
pub mod gdt;
pub mod interrupts;
pub mod ktest;
pub mod mailbox;
pub mod memory;
pub mod paging;
pub mod panic;
pub mod percpu;
pub mod sched;
pub mod slots;
pub mod smp;
pub mod start;
pub mod syscall;
pub mod time;
pub mod tlb;
pub mod trap;
pub mod uring;
