//! Everything that touches the hardware.
//!
//! # Layers
//!
//! Each module imports only from the rows below its own (lowest layer at the
//! bottom; modules on one row do not import each other unless an arrow says
//! so). The one edge upwards is the entry stubs' call into the scheduler
//! when an interrupt or exception arrives from ring 3 (`interrupts` →
//! `sched::user_trap`); the `syscall` entry sits above the scheduler and
//! needs no such edge.
//!
//! ```text
//!  modes          start
//!                 ktest    bench
//!                 smp
//!  entry          syscall
//!  scheduling     sched/ {mod, runq, clock, pct, upcall, switch}
//!  rings          uring
//!  environments   env/ {registry, bindings, umem, spawn, events}
//!  cross-core     mailbox                  interrupts - - -> sched::user_trap
//!                 tlb                      panic             (the one back edge)
//!  devices        apic   paging   acpi   gdt   slots   ioapic   ktrace
//!  clocks, I/O    time   memory   console
//!  base           cpu    boot     percpu   trap   xstate
//! ```
//!
//! In words, bottom up: `cpu`, `boot`, `percpu`, `trap` and `xstate` import nothing
//! from `machine`; `time` uses `cpu`, `memory` uses `boot`, `console` uses
//! `percpu`; `apic`, `paging`, `acpi`, `gdt`, `slots`, `ioapic` and `ktrace` use the rows below
//! (every traced layer above calls `ktrace::record`);
//! `tlb` (it knows an address space only as a `tlb::Space`) and `panic` use
//! the devices; `mailbox` uses `tlb` (it serves the shootdown inboxes first)
//! and `interrupts` uses `panic` (NMIs), and neither names a handler above
//! it: the mailbox, the tests and the benchmarks register theirs in `trap`;
//! `env` uses the mailboxes and the TLB but never the scheduler (it wakes
//! vCPUs with `mailbox::kick`); `uring` uses `env`; `sched` uses all of
//! these; `syscall` uses `sched`, `uring` and `env`; `smp` brings cores up
//! into the idle loop (and keeps the MADT's list); `ktest` and `bench` drive
//! everything; `start` picks the mode. The same diagram is in
//! `docs/kernel-layers.md`; `kernel/tests/layers.rs` checks it.
//!
//! Per-core state follows the layers too: [`percpu`] holds only what every
//! layer needs (self pointer, stack tops, index, APIC id, counters), and each
//! module declares its own per-core state with `cpu_local!`,
//! [`percpu::PerCore`] or a per-core static array.
//!
//! # Unsafe
//!
//! `unsafe` in the kernel lives here and only here (the library crate
//! forbids it), and within `machine` only in the modules below that are
//! marked `#[allow(unsafe_code)]`; everywhere else the compiler refuses it
//! (`#![deny(unsafe_code)]` on this module; `unsafe_op_in_unsafe_fn` is
//! denied workspace-wide).
//!
//! | module | owns | unsafe for |
//! |---|---|---|
//! | [`boot`] | PVH entry, boot page tables, AP trampoline | assembly, linker symbols |
//! | [`cpu`] | port I/O, MSRs, `rdtsc`, halting, leaving QEMU | privileged instructions |
//! | [`trap`] | the trap frame, vectors, IPI handler table | — |
//! | [`xstate`] | ring 3's vector registers (x87/SSE/AVX) and FS base: CPU setup, save areas | CR0/CR4/XCR0, `xsave`/`xrstor`, MSRs |
//! | [`percpu`] | the per-core area reached through GS; `cpu_local!`, `PerCore` | GS base, per-core slots |
//! | [`console`] | the serial port and the `log` backend | port I/O |
//! | [`memory`] | the direct map, frame allocator instance, kernel heap | raw physical memory |
//! | [`time`] | TSC frequency, PIT calibration, bounded waits | PIT ports |
//! | [`gdt`] | per-core GDT, TSS and IST stacks | loading descriptor tables |
//! | [`apic`] | local APIC (x2APIC or xAPIC), timer, IPIs | APIC registers |
//! | [`acpi`] | MADT: the list of processors, the I/O APICs, ISA overrides | firmware tables |
//! | [`ioapic`] | routing a device line (COM1) to a core | I/O APIC registers |
//! | [`paging`] | environment page tables | page-table memory, CR3 |
//! | [`slots`] | the time vectors' shared schedule pages | — |
//! | [`ktrace`] | the per-core kernel trace rings, their on/off flag, the hook and the dump | — |
//! | [`tlb`] | PCIDs and cross-core TLB shootdown | CR4, the inbox's address-space pointer |
//! | [`panic`](mod@panic) | panic report, backtrace, failure exit | frame-pointer walk |
//! | [`interrupts`] | IDT, entry stubs, exception reports, device interrupts | assembly, `lidt` |
//! | [`mailbox`] | per-core message queues, IPI wake-up, reschedule requests | — |
//! | [`env`](mod@env) | environments, secure bindings, user memory | kernel pages and user memory through the direct map (`env::umem`, `env::spawn`, `env::events` only) |
//! | [`uring`] | ring memory, ring operations, timers, notifications, predicate memory | pinned shared frames |
//! | [`sched`] | vCPUs, run queues, time slots, protected control transfer, upcalls, entering and leaving ring 3 | stack switches (`sched::switch` only) |
//! | [`syscall`] | the `syscall` entry and dispatcher | entry stub, MSRs |
//! | [`smp`] | INIT-SIPI-SIPI bring-up of application processors | trampoline copy |
//! | [`ktest`] | in-kernel tests (`mode=test`) | `int3` |
//! | [`bench`](mod@bench) | in-kernel benchmarks (`mode=bench`) | — |
//! | [`start`] | the bootstrap processor's path from the PVH entry to the mode the command line chose | the `no_mangle` entry |

#![deny(unsafe_code)]

#[allow(unsafe_code, reason = "reads the MADT from firmware memory")]
pub mod acpi;
#[allow(unsafe_code, reason = "programs the local APIC's registers")]
pub mod apic;
pub mod bench;
#[allow(unsafe_code, reason = "the PVH entry, boot page tables and linker symbols")]
pub mod boot;
#[allow(unsafe_code, reason = "the serial port's I/O ports")]
pub mod console;
#[allow(unsafe_code, reason = "privileged instructions: port I/O, MSRs, hlt")]
pub mod cpu;
pub mod env;
#[allow(unsafe_code, reason = "loads the GDT, TSS and segment registers")]
pub mod gdt;
#[allow(unsafe_code, reason = "the entry stubs, lidt and the legacy PIC's ports")]
pub mod interrupts;
#[allow(unsafe_code, reason = "the I/O APIC's registers")]
pub mod ioapic;
#[allow(unsafe_code, reason = "the breakpoint test executes int3")]
pub mod ktest;
pub mod ktrace;
pub mod mailbox;
#[allow(unsafe_code, reason = "raw physical memory through the direct map, the heap")]
pub mod memory;
#[allow(unsafe_code, reason = "page-table memory and CR3")]
pub mod paging;
#[allow(unsafe_code, reason = "the frame-pointer walk of the backtrace")]
pub mod panic;
#[allow(unsafe_code, reason = "the GS-based per-core area and CpuLocal's slots")]
pub mod percpu;
pub mod sched;
pub mod slots;
#[allow(unsafe_code, reason = "copies the AP trampoline below 1 MiB")]
pub mod smp;
#[allow(unsafe_code, reason = "the kernel's no_mangle entry point")]
pub mod start;
#[allow(unsafe_code, reason = "the syscall entry stub and its MSRs")]
pub mod syscall;
#[allow(unsafe_code, reason = "the PIT's I/O ports for TSC calibration")]
pub mod time;
#[allow(unsafe_code, reason = "CR4.PCIDE and the shootdown inbox's pointer")]
pub mod tlb;
pub mod trap;
#[allow(unsafe_code, reason = "ring and predicate memory in pinned frames")]
pub mod uring;
#[allow(unsafe_code, reason = "CR0/CR4/XCR0, xsave/xrstor, the FS base MSR")]
pub mod xstate;
