//! From the PVH entry to Rust: the 32-bit stub, the boot page tables, the
//! switch to long mode, and the real-mode trampoline that application
//! processors start in.
//!
//! This module owns the first page tables (`boot_pml4`), which stay the
//! kernel's page tables afterwards:
//!
//! ```text
//! PML4[0]    -> boot_pdpt_low  identity map of physical 0..4 GiB (2 MiB pages);
//!                               needed while a core turns paging on, and by
//!                               the AP trampoline. Removed once user address
//!                               spaces exist (environments issue).
//! PML4[256]  -> boot_pdpt_low  the direct map: PHYS_OFFSET + p -> p, 0..4 GiB
//! PML4[511]  -> boot_pdpt_high the kernel image: 0xffffffff80000000 -> 0
//! 3..4 GiB (MMIO: local APIC, I/O APIC) is mapped uncached (PCD|PWT).
//! ```
//!
//! Boot order of a core:
//! * BSP: PVH enters `pvh_start32` (32-bit, paging off, `ebx` = physical
//!   address of `hvm_start_info`).
//! * AP: INIT-SIPI-SIPI starts it in real mode at the trampoline page
//!   ([`TRAMPOLINE_PHYS`]); the trampoline loads the boot GDT, enables
//!   protected mode and far-jumps to `ap_start32`.
//! * Both then run `enter_long_mode` (PAE, CR3, EFER.LME/NXE, CR0.PG) and
//!   jump to 64-bit code, which sets the stack and calls
//!   `kernel_bsp_main(start_info_phys)` or `kernel_ap_main()`.
//!
//! The 32-bit and 16-bit parts are AT&T syntax: LLVM's Intel syntax turns
//! some absolute operands into 16-bit relocations in `.code32` (DESIGN §3).

use core::sync::atomic::AtomicU64;

/// Physical page the AP trampoline is copied to. The SIPI vector is its page
/// number (0x08). Below 1 MiB, in memory the frame allocator never hands out.
pub const TRAMPOLINE_PHYS: u64 = 0x8000;

/// Stack top (virtual) for the next AP to start; written by the BSP before
/// each INIT-SIPI-SIPI and read by that AP's 64-bit entry.
#[unsafe(no_mangle)]
pub static AP_BOOT_STACK_TOP: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 4                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start32

    .section .boot.text, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, %esi         /* hvm_start_info (physical) survives to Rust */
    xorl %ebp, %ebp         /* 0 = bootstrap processor */
    lgdt boot_gdt_ptr
    jmp enter_long_mode

    .global ap_start32
ap_start32:
    /* From the trampoline: CS = 0x18 (flat 32-bit), the boot GDT loaded. */
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $1, %ebp           /* 1 = application processor */

enter_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs

    movl %cr4, %eax
    orl $0x20, %eax         /* PAE */
    movl %eax, %cr4

    movl $boot_pml4, %eax
    movl %eax, %cr3

    movl $0x80000001, %eax  /* NX support in edx bit 20 */
    cpuid
    movl %edx, %edi
    movl $0xC0000080, %ecx  /* IA32_EFER */
    rdmsr
    orl $0x100, %eax        /* LME */
    testl $0x100000, %edi
    jz 1f
    orl $0x800, %eax        /* NXE */
1:
    wrmsr

    movl %cr0, %eax
    orl $0x80010001, %eax   /* PG | WP | PE */
    movl %eax, %cr0

    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    xorl %eax, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    testl %ebp, %ebp
    jnz 2f
    movabsq $boot_stack_top, %rsp
    movl %esi, %edi
    xorl %ebp, %ebp
    movabsq $kernel_bsp_main, %rax
    callq *%rax
    ud2
2:
    movabsq $AP_BOOT_STACK_TOP, %rax
    movq (%rax), %rsp
    xorl %ebp, %ebp
    movabsq $kernel_ap_main, %rax
    callq *%rax
    ud2

    .section .boot.data, "aw"
    .balign 16
boot_gdt:
    .quad 0                     /* 0x00 null */
    .quad 0x00af9a000000ffff    /* 0x08 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10 data */
    .quad 0x00cf9a000000ffff    /* 0x18 32-bit code (AP trampoline) */
boot_gdt_end:
    .global boot_gdt_ptr
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .balign 4096
    .global boot_pml4
boot_pml4:
    .quad boot_pdpt_low + 0x3
    .fill 255, 8, 0
    .quad boot_pdpt_low + 0x3
    .fill 254, 8, 0
    .quad boot_pdpt_high + 0x3
boot_pdpt_low:
    .quad boot_pd + 0x3
    .quad boot_pd + 0x1000 + 0x3
    .quad boot_pd + 0x2000 + 0x3
    .quad boot_pd + 0x3000 + 0x3
    .fill 508, 8, 0
boot_pdpt_high:
    .fill 510, 8, 0
    .quad boot_pd + 0x3
    .quad boot_pd + 0x1000 + 0x3
boot_pd:
    .set pde, 0
    .rept 1536
    .quad (pde << 21) | 0x83        /* present, writable, 2 MiB */
    .set pde, pde + 1
    .endr
    .rept 512
    .quad (pde << 21) | 0x9b        /* ... and uncached: MMIO hole */
    .set pde, pde + 1
    .endr

    .section .bss.boot_stack, "aw", @nobits
    .balign 16
    .global boot_stack_top
boot_stack:
    .skip 65536
boot_stack_top:

    .section .rodata.trampoline, "a"
    .code16
    .global trampoline_start, trampoline_end
trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (tramp_gdt_ptr - trampoline_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x18, $ap_start32
    .balign 8
tramp_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
trampoline_end:
    .code64
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static boot_stack_top: u8;
    static trampoline_start: u8;
    static trampoline_end: u8;
    static __kernel_phys_start: u8;
    static __kernel_phys_end: u8;
}

/// The real-mode trampoline's bytes, to be copied to [`TRAMPOLINE_PHYS`].
pub fn trampoline_code() -> &'static [u8] {
    // SAFETY: both symbols are defined by the `global_asm!` above in the same
    // read-only section, start before end; the bytes between them are
    // immutable for the kernel's lifetime.
    unsafe {
        let start = &raw const trampoline_start;
        let end = &raw const trampoline_end;
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// Top of the BSP's boot stack, which becomes its idle stack.
pub fn boot_stack_top_addr() -> u64 {
    (&raw const boot_stack_top) as u64
}

/// Physical range occupied by the kernel image (boot section to end of bss).
pub fn kernel_image_phys() -> core::ops::Range<u64> {
    let start = (&raw const __kernel_phys_start) as u64;
    let end = (&raw const __kernel_phys_end) as u64;
    start..end
}
