//! The trap frame, the kernel's interrupt vectors and the table of
//! registered interrupt handlers.
//!
//! A leaf: it imports nothing else from `machine`, so every layer may name a
//! [`TrapFrame`] or a vector without pulling in the entry stubs
//! (`interrupts.rs`) or the scheduler. The handler table lets a module
//! above the interrupt path (the benchmarks, the tests, the mailboxes) take
//! a vector without the interrupt path naming it.
//!
//! Invariant: a handler is registered before the first interrupt with its
//! vector can arrive, and never replaced while one may be running.

use spin::Once;

/// The kernel's interrupt vectors.
pub mod vectors {
    /// `int3`: in ring 0 only the in-kernel tests raise it (they register a
    /// handler); unhandled, it returns to the next instruction.
    pub const BREAKPOINT: u8 = 3;
    /// Local APIC timer.
    pub const TIMER: u8 = 0x30;
    /// Mailbox wake-up IPI.
    pub const MAILBOX: u8 = 0x31;
    /// Benchmark: bare IPI ping (the target answers with a pong IPI).
    pub const BENCH_PING: u8 = 0x32;
    /// Benchmark: bare IPI pong.
    pub const BENCH_PONG: u8 = 0x33;
    /// COM1's receive interrupt (IRQ 4 through the I/O APIC, to the BSP).
    pub const CONSOLE_RX: u8 = 0x34;
    /// Local APIC error.
    pub const APIC_ERROR: u8 = 0xfe;
    /// Local APIC spurious interrupt (no EOI).
    pub const SPURIOUS: u8 = 0xff;
}

/// RFLAGS of a context entering ring 3: IF (interrupts on) and bit 1, which
/// is reserved and always reads as 1; IOPL 0, every other flag clear.
pub const RFLAGS_USER: u64 = RFLAGS_IF | RFLAGS_RESERVED_1;
/// RFLAGS.IF: maskable interrupts enabled.
pub const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS bit 1: reserved, always 1.
pub const RFLAGS_RESERVED_1: u64 = 1 << 1;

/// Registers saved on entry, in stack order (lowest address first).
#[repr(C)]
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Vector number pushed by the stub.
    pub vector: u64,
    /// Error code pushed by the CPU, or 0.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// Whether the interrupted code ran in ring 3.
    pub fn came_from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// An interrupt handler: runs with interrupts off, must not wait; the
/// caller sends the EOI (for APIC vectors) after it returns.
pub type Handler = fn();

/// Registered handlers by vector.
static HANDLERS: [Once<Handler>; 256] = [const { Once::new() }; 256];

/// Makes `handler` the one that runs for `vector` on every core. The first
/// registration of a vector wins (a module registers its vectors once, at
/// boot or when its harness starts).
pub fn register(vector: u8, handler: Handler) {
    HANDLERS[usize::from(vector)].call_once(|| handler);
}

/// The handler registered for `vector`, if any.
#[inline]
pub fn handler(vector: u8) -> Option<Handler> {
    HANDLERS[usize::from(vector)].get().copied()
}
