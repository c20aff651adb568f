//! The IDT, the interrupt entry stubs and the trap frame.
//!
//! One table of 256 assembly stubs (16 bytes apart) pushes a dummy error
//! code where the CPU does not, then the vector number, and jumps to
//! `isr_common`, which saves every general-purpose register into a
//! [`TrapFrame`] on the current stack and calls [`trap_dispatch`]. The
//! `syscall` entry builds the same frame itself (vector
//! [`SYSCALL_VECTOR`](super::syscall::SYSCALL_VECTOR)), calls its own
//! dispatcher and leaves through `isr_restore` (all but the `RingEnter`
//! fast path, which builds no frame and returns with `sysretq`). Returning
//! from `trap_dispatch` restores the (possibly edited) frame with `iretq`.
//! `swapgs` runs on entry from and exit to ring 3, so GS always points at the
//! per-core state inside the kernel.
//!
//! Vector map: 0..32 exceptions; 0x20..0x30 the legacy PIC (remapped there
//! and masked; its spurious interrupts are ignored); [`vectors`] for ours.
//! Handlers of our IPIs are registered by their modules ([`trap::register`]):
//! this module names none of them.

use super::console::kprintln;
use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};
use super::percpu::this_cpu;
use super::{apic, cpu, panic, trap};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::tables::{DescriptorTablePointer, lidt};
use x86_64::registers::control::Cr2;

pub use super::trap::{TrapFrame, vectors};

core::arch::global_asm!(
    r#"
    .section .text.isr_stubs, "ax"
    .balign 16
    .global isr_stub_table
isr_stub_table:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    push 0
    .endif
    push vec
    jmp isr_common
    .set vec, vec + 1
    .endr

isr_common:
    test byte ptr [rsp + 24], 3
    jz 1f
    swapgs
1:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call {dispatch}
    /* The syscall entry leaves through here too. */
    .global isr_restore
isr_restore:
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    test byte ptr [rsp + 24], 3
    jz 2f
    swapgs
2:
    add rsp, 16
    iretq
    "#,
    dispatch = sym trap_dispatch,
);

unsafe extern "C" {
    static isr_stub_table: u8;
}

/// One 16-byte IDT gate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    /// A present 64-bit interrupt gate (interrupts off on entry).
    fn interrupt(handler: u64, ist: Option<u16>, dpl: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist: ist.map_or(0, |i| i as u8 + 1),
            attributes: 0x8e | (dpl << 5),
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();

/// Builds the IDT (once) and loads it on this core.
pub fn init_this_cpu() {
    let idt = IDT.call_once(|| {
        let stubs = (&raw const isr_stub_table) as u64;
        Idt(core::array::from_fn(|v| {
            let ist = match v {
                2 => Some(IST_NMI),
                8 => Some(IST_DOUBLE_FAULT),
                18 => Some(IST_MACHINE_CHECK),
                _ => None,
            };
            // `int3` may be used from ring 3 (debuggers, upcall tests).
            let dpl = if v == 3 { 3 } else { 0 };
            Gate::interrupt(stubs + 16 * v as u64, ist, dpl)
        }))
    });
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(idt),
    };
    // SAFETY: the IDT lives in a static for the kernel's lifetime and every
    // gate points at a stub in `isr_stub_table` that saves and restores the
    // full register state around `trap_dispatch`.
    unsafe { lidt(&pointer) };
}

/// Remaps the legacy 8259 PICs to 0x20..0x30 and masks every line, so that
/// only the local APIC delivers interrupts.
pub fn disable_legacy_pic() {
    // SAFETY: the standard ICW1..ICW4 initialisation sequence on the PIC
    // ports, followed by masking all lines; the kernel owns these ports.
    unsafe {
        for (cmd, data, offset, cascade) in [(0x20, 0x21, 0x20, 4), (0xa0, 0xa1, 0x28, 2)] {
            cpu::outb(cmd, 0x11);
            cpu::outb(data, offset);
            cpu::outb(data, cascade);
            cpu::outb(data, 0x01);
            cpu::outb(data, 0xff);
        }
    }
}

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range exceeded",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack-segment fault",
    "general protection fault",
    "page fault",
    "reserved",
    "x87 floating-point error",
    "alignment check",
    "machine check",
    "SIMD floating-point error",
    "virtualization exception",
    "control protection exception",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection exception",
    "VMM communication exception",
    "security exception",
    "reserved",
];

/// Called by `isr_common` with the saved state of the interrupted code.
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    if frame.came_from_user() && frame.vector != 2 && frame.vector != 18 {
        // The one call upwards: an entry from ring 3 belongs to the
        // scheduler, which decides who runs when the entry returns.
        super::sched::user_trap(frame);
        return;
    }
    let vector = frame.vector as u8;
    match vector {
        vectors::BREAKPOINT => {
            if let Some(handler) = trap::handler(vectors::BREAKPOINT) {
                handler();
            }
        }
        2 => panic::on_nmi(frame),
        0..=31 => fatal_exception(frame),
        _ => {
            device_interrupt(vector, false);
        }
    }
}

/// What [`device_interrupt`] handled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The local APIC timer.
    Timer,
    /// Anything else.
    Other,
}

/// Handles an interrupt that is not an exception (vector 32 and up), from
/// ring 0 or ring 3: the timer, the registered handlers (mailbox IPI,
/// benchmarks), spurious and unexpected vectors; sends the EOI where one is
/// due. From ring 0 the timer re-arms the idle tick; from ring 3 the
/// scheduler arms it for its next decision.
#[inline]
pub fn device_interrupt(vector: u8, from_user: bool) -> Device {
    match vector {
        vectors::TIMER => {
            this_cpu().ticks.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            if !from_user {
                apic::arm_idle_tick();
            }
            apic::end_of_interrupt();
            return Device::Timer;
        }
        // Spurious legacy PIC interrupts (masked lines) and the APIC's
        // spurious vector take no EOI.
        0x20..=0x2f | vectors::SPURIOUS => {}
        vectors::APIC_ERROR => {
            log::error!("local APIC error interrupt");
            apic::end_of_interrupt();
        }
        other => {
            super::ktrace::record(kernel::trace::Kind::Irq, 0, u64::from(other));
            match trap::handler(other) {
                Some(handler) => handler(),
                None => log::warn!("unexpected interrupt vector {other:#x}"),
            }
            apic::end_of_interrupt();
        }
    }
    Device::Other
}

/// The name of exception `vector`.
pub fn exception_name(vector: u64) -> &'static str {
    EXCEPTION_NAMES.get(vector as usize).copied().unwrap_or("interrupt")
}

/// Prints the full faulting state and panics. Exceptions in the kernel are
/// bugs; once environments exist, ring-3 exceptions are delivered to them
/// instead of reaching this.
fn fatal_exception(frame: &TrapFrame) -> ! {
    let name = EXCEPTION_NAMES[frame.vector as usize];
    let cr2 = Cr2::read_raw();
    kprintln!(
        "exo: EXCEPTION {} (vector {}) error={:#x} cr2={:#x}\n  rip={:#018x} cs={:#x} rflags={:#x} rsp={:#018x} ss={:#x}\n  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}\n  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}\n  r13={:#018x} r14={:#018x} r15={:#018x}",
        name,
        frame.vector,
        frame.error_code,
        cr2,
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        frame.ss,
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp,
        frame.r8,
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12,
        frame.r13,
        frame.r14,
        frame.r15
    );
    panic!(
        "{name} at {:#x} in {}",
        frame.rip,
        if frame.came_from_user() { "ring 3" } else { "the kernel" }
    );
}
