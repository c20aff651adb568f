//! Per-core GDT and TSS, with interrupt stacks.
//!
//! Every core gets its own GDT (because the TSS descriptor is per core) with
//! the same layout, chosen so that `sysret` can later derive the user
//! selectors from `STAR` (user data right below user code):
//!
//! ```text
//! 0x00 null   0x08 kernel code   0x10 kernel data
//! 0x18 user data (0x1b with RPL 3)   0x20 user code (0x23)   0x28 TSS (2 slots)
//! ```
//!
//! The TSS carries the IST stacks: double fault, NMI and machine check run
//! on their own stacks so that a kernel stack overflow is still reported.

use alloc::boxed::Box;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST index (1-based in the IDT, 0-based here) for double faults.
pub const IST_DOUBLE_FAULT: u16 = 0;
/// IST index for NMIs.
pub const IST_NMI: u16 = 1;
/// IST index for machine checks.
pub const IST_MACHINE_CHECK: u16 = 2;

/// Size of each IST stack and of the ring-0 stack.
pub const STACK_SIZE: usize = 64 * 1024;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector (RPL 3).
pub const USER_DS: u16 = 0x1b;
/// User code selector (RPL 3).
pub const USER_CS: u16 = 0x23;

/// A freshly allocated kernel stack; returns its top.
pub fn alloc_stack() -> VirtAddr {
    let stack: &'static mut [u8] = Box::leak(alloc::vec![0u8; STACK_SIZE].into_boxed_slice());
    VirtAddr::from_ptr(stack.as_ptr_range().end)
}

/// Builds and loads this core's GDT and TSS; returns the top of the trap
/// stack (`TSS.rsp0`) that entries from ring 3 use.
pub fn init_this_cpu() -> VirtAddr {
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[IST_DOUBLE_FAULT as usize] = alloc_stack();
    tss.interrupt_stack_table[IST_NMI as usize] = alloc_stack();
    tss.interrupt_stack_table[IST_MACHINE_CHECK as usize] = alloc_stack();
    let trap_stack = alloc_stack();
    tss.privilege_stack_table[0] = trap_stack;
    let tss: &'static TaskStateSegment = Box::leak(Box::new(tss));

    let gdt: &'static mut GlobalDescriptorTable = Box::leak(Box::new(GlobalDescriptorTable::new()));
    let kernel_cs = gdt.append(Descriptor::kernel_code_segment());
    let kernel_ds = gdt.append(Descriptor::kernel_data_segment());
    let user_ds = gdt.append(Descriptor::user_data_segment());
    let user_cs = gdt.append(Descriptor::user_code_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    debug_assert_eq!((kernel_cs.0, kernel_ds.0), (KERNEL_CS, KERNEL_DS));
    debug_assert_eq!((user_ds.0, user_cs.0), (USER_DS, USER_CS));
    let gdt: &'static GlobalDescriptorTable = gdt;
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, which lives forever;
    // reloading CS and the data segments with flat kernel descriptors and
    // loading the TSS (used by nothing else) keeps every address valid.
    unsafe {
        CS::set_reg(kernel_cs);
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        SS::set_reg(kernel_ds);
        load_tss(tss_sel);
    }
    // x87 and SSE state is not saved across environments: make any use of
    // it fault (x87: #NM, SSE: #UD) instead of leaking state between them.
    // SAFETY: the kernel is built soft-float and never uses the FPU.
    unsafe {
        use x86_64::registers::control::{Cr0, Cr0Flags};
        Cr0::update(|f| {
            f.insert(Cr0Flags::EMULATE_COPROCESSOR);
            f.remove(Cr0Flags::MONITOR_COPROCESSOR);
        });
    }
    trap_stack
}
