//! The user context the trap frame does not hold: the vector registers
//! (x87, SSE and, where the CPU has it, AVX) and the FS base.
//!
//! **Setup.** [`init_this_cpu`] makes SSE usable in ring 3 on the calling
//! core: CR0.MP and CR0.NE set (x87 errors raise #MF, never the legacy
//! FERR# interrupt), CR0.EM and CR0.TS clear (no #NM: the state is switched
//! eagerly, see below), CR4.OSFXSR and CR4.OSXMMEXCPT (SSE instructions
//! and #XM). With XSAVE (CPUID.1:ECX.XSAVE) it also sets CR4.OSXSAVE and
//! XCR0 = x87 | SSE | AVX (AVX only where CPUID says the CPU has it and can
//! save it). Every core gets the same configuration (the first core's
//! CPUID answers decide; QEMU's cores are identical).
//!
//! **Save and restore.** A [`UserExt`] is one context's state: a 64-byte
//! aligned save area and the FS base. [`UserExt::save`] takes the live
//! registers (`xsaveopt`, else `xsave`, else `fxsave`; `rdmsr` of FS base),
//! [`UserExt::restore`] loads them (`xrstor` / `fxrstor`; `wrmsr`). The
//! kernel itself is built without SSE (`x86_64-unknown-none` is soft-float)
//! and never executes an x87, SSE or AVX instruction, so the user's vector
//! registers stay live and untouched across every kernel entry: only a
//! change of the context that runs in ring 3 needs a save and a restore
//! (the scheduler does them where it changes the trap frame's owner; see
//! `sched`).
//!
//! **Eager.** The state is switched at every change of context, not lazily
//! on the first use after it (CR0.TS and #NM): the measurements and the
//! reasons are in docs/ARCHITECTURE.md ("Vector state, FS base and
//! system-call redirection").
//!
//! Owns: the CPU's vector-state configuration ([`features`]), the initial
//! state every new context starts from, the save/restore instructions.
//! Imports nothing from `machine` (a base-row module).

use alloc::boxed::Box;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use core::sync::atomic::{AtomicU8, Ordering};
use spin::Once;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::xcontrol::{XCr0, XCr0Flags};

/// Bytes of a save area: enough for the legacy region (512), the XSAVE
/// header (64) and the AVX state (256) in the standard format (832), with
/// room to spare. [`init_this_cpu`] checks the CPU's size against it.
pub const AREA_SIZE: usize = 1024;

/// Offset of the x87 control word in the legacy region.
const FCW_OFFSET: usize = 0;
/// Offset of MXCSR in the legacy region.
const MXCSR_OFFSET: usize = 24;
/// The x87 control word after `fninit`: every exception masked.
pub const FCW_INITIAL: u16 = 0x037f;
/// MXCSR at reset: every exception masked, round to nearest.
pub const MXCSR_INITIAL: u32 = 0x1f80;

/// A save area, aligned as `xsave` needs (64; `fxsave` needs 16).
#[repr(C, align(64))]
#[derive(Clone)]
pub struct Area(pub [u8; AREA_SIZE]);

const _: () = assert!(core::mem::align_of::<Area>() == 64);

/// The initial state: x87 control word and MXCSR at their reset values,
/// everything else 0, including the XSAVE header (`XSTATE_BV` = 0: `xrstor`
/// puts every component in its initial configuration, all registers zero;
/// MXCSR is loaded from the area all the same).
const INITIAL: Area = {
    let mut a = [0u8; AREA_SIZE];
    let fcw = FCW_INITIAL.to_le_bytes();
    a[FCW_OFFSET] = fcw[0];
    a[FCW_OFFSET + 1] = fcw[1];
    let mxcsr = MXCSR_INITIAL.to_le_bytes();
    let mut i = 0;
    while i < 4 {
        a[MXCSR_OFFSET + i] = mxcsr[i];
        i += 1;
    }
    Area(a)
};

/// The initial state, in a static so that its address is stable for
/// [`load_initial`]'s `xrstor`.
static INITIAL_AREA: Area = INITIAL;

/// How state is saved on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Method {
    /// `fxsave` / `fxrstor`: x87 and SSE (no XSAVE).
    Fxsave = 0,
    /// `xsave` / `xrstor`.
    Xsave = 1,
    /// `xsaveopt` / `xrstor`: skips components unchanged since the last
    /// `xrstor` from the same area, and those in their initial state.
    Xsaveopt = 2,
}

/// The vector-state configuration all cores share.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// How state is saved.
    pub method: Method,
    /// XCR0 as set on every core (0 without XSAVE).
    pub xcr0: u64,
    /// Bytes the CPU writes for that XCR0 (512 with `fxsave`).
    pub size: u32,
    /// AVX is usable in ring 3.
    pub avx: bool,
}

static FEATURES: Once<Features> = Once::new();
/// [`Features::method`], for the hot paths (one byte load).
static METHOD: AtomicU8 = AtomicU8::new(Method::Fxsave as u8);

/// The machine's vector-state configuration (after the first
/// [`init_this_cpu`]).
pub fn features() -> Option<Features> {
    FEATURES.get().copied()
}

fn detect() -> Features {
    let leaf1 = __cpuid(1);
    let xsave = leaf1.ecx & (1 << 26) != 0;
    let avx_cpu = leaf1.ecx & (1 << 28) != 0;
    assert!(leaf1.edx & (1 << 24) != 0 && leaf1.edx & (1 << 25) != 0, "no FXSR/SSE");
    if !xsave {
        return Features { method: Method::Fxsave, xcr0: 0, size: 512, avx: false };
    }
    // Leaf 0xd exists when CPUID.1 reports XSAVE.
    let (xd0, xd1) = (__cpuid_count(0xd, 0), __cpuid_count(0xd, 1));
    let supported = u64::from(xd0.eax) | u64::from(xd0.edx) << 32;
    let mut xcr0 = XCr0Flags::X87.bits() | XCr0Flags::SSE.bits();
    let avx = avx_cpu && supported & XCr0Flags::AVX.bits() != 0;
    if avx {
        xcr0 |= XCr0Flags::AVX.bits();
    }
    let method = if xd1.eax & 1 != 0 { Method::Xsaveopt } else { Method::Xsave };
    // The size is that of the XCR0 in force: known once it is set.
    Features { method, xcr0, size: 0, avx }
}

/// Makes x87, SSE (and AVX where present) usable in ring 3 on this core.
/// Call once per core, before it enters ring 3.
pub fn init_this_cpu() {
    let features = *FEATURES.call_once(|| {
        let mut f = detect();
        program(&f);
        f.size = if f.method == Method::Fxsave {
            512
        } else {
            // EBX: the size for the XCR0 just set.
            __cpuid_count(0xd, 0).ebx
        };
        assert!(f.size as usize <= AREA_SIZE, "XSAVE area of {} bytes > {AREA_SIZE}", f.size);
        METHOD.store(f.method as u8, Ordering::Relaxed);
        f
    });
    program(&features);
}

/// Sets CR0, CR4 and XCR0 on this core for `f`.
fn program(f: &Features) {
    let mut cr0 = Cr0::read();
    cr0.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::NUMERIC_ERROR);
    cr0.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
    let mut cr4 = Cr4::read();
    cr4.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
    if f.method != Method::Fxsave {
        cr4.insert(Cr4Flags::OSXSAVE);
    }
    // SAFETY: these bits only make the x87/SSE/XSAVE instructions usable
    // and select #MF for x87 errors; the kernel itself never executes such
    // instructions (it is built soft-float), so nothing it relies on
    // changes. OSXSAVE is set only where CPUID reports XSAVE.
    unsafe {
        Cr0::write(cr0);
        Cr4::write(cr4);
    }
    if f.method != Method::Fxsave {
        // SAFETY: x87 | SSE always, AVX only where CPUID.(0xd,0) lists it as
        // supported: a valid XCR0 (x87 set, AVX with SSE); CR4.OSXSAVE is
        // set above.
        unsafe { XCr0::write_raw(f.xcr0) };
    }
}

#[inline(always)]
fn method() -> u8 {
    METHOD.load(Ordering::Relaxed)
}

/// Saves the live vector registers into `area`.
#[inline(always)]
fn save_area(area: &mut Area) {
    let ptr = area as *mut Area;
    // SAFETY: `ptr` is a 64-byte aligned, writable area of `AREA_SIZE`
    // bytes, at least the size the CPU writes for XCR0 (checked at init);
    // the instruction matches what `init_this_cpu` enabled on every core;
    // EDX:EAX all ones ask for every component XCR0 enables.
    unsafe {
        match method() {
            2 => core::arch::asm!(
                "xsaveopt64 [{}]", in(reg) ptr, in("eax") u32::MAX, in("edx") u32::MAX,
                options(nostack, preserves_flags)
            ),
            1 => core::arch::asm!(
                "xsave64 [{}]", in(reg) ptr, in("eax") u32::MAX, in("edx") u32::MAX,
                options(nostack, preserves_flags)
            ),
            _ => core::arch::asm!("fxsave64 [{}]", in(reg) ptr, options(nostack, preserves_flags)),
        }
    }
}

/// Loads the vector registers from `area`.
#[inline(always)]
fn restore_area(area: &Area) {
    let ptr = area as *const Area;
    // SAFETY: `area` was written only by `save_area` (the CPU) or copied
    // from `INITIAL` (a valid legacy region, MXCSR without reserved bits,
    // an XSAVE header of zeros): `xrstor`/`fxrstor` cannot fault on it.
    // Ring 3 never reaches these areas (kernel heap), so it cannot make
    // them invalid. The loaded state only affects ring 3: the kernel runs
    // no vector instructions.
    unsafe {
        if method() == Method::Fxsave as u8 {
            core::arch::asm!("fxrstor64 [{}]", in(reg) ptr, options(nostack, preserves_flags));
        } else {
            core::arch::asm!(
                "xrstor64 [{}]", in(reg) ptr, in("eax") u32::MAX, in("edx") u32::MAX,
                options(nostack, preserves_flags)
            );
        }
    }
}

/// Reads the FS base MSR.
#[inline(always)]
fn read_fs_base() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading IA32_FS_BASE has no side effect.
    unsafe {
        core::arch::asm!(
            "rdmsr", in("ecx") 0xc000_0100u32, out("eax") lo, out("edx") hi,
            options(nostack, nomem, preserves_flags)
        );
    }
    u64::from(hi) << 32 | u64::from(lo)
}

/// Writes the FS base MSR. `base` must be canonical (the callers pass
/// checked user-half values or what `read_fs_base` returned).
#[inline(always)]
fn write_fs_base(base: u64) {
    // SAFETY: a canonical value (see above) cannot fault; the kernel never
    // uses FS, so only ring 3's `fs:` accesses see it.
    unsafe {
        core::arch::asm!(
            "wrmsr", in("ecx") 0xc000_0100u32, in("eax") base as u32, in("edx") (base >> 32) as u32,
            options(nostack, nomem, preserves_flags)
        );
    }
}

/// Sets the live FS base (`SetFsBase`, already checked to be in the user
/// half).
pub fn set_fs_base(base: u64) {
    debug_assert!(base < 1 << 47);
    write_fs_base(base);
}

/// One context's vector registers and FS base, while it is not the one
/// live in the CPU.
pub struct UserExt {
    area: Box<Area>,
    /// The FS base.
    pub fs_base: u64,
}

impl UserExt {
    /// The initial state (every vector register 0, control words at their
    /// reset values, FS base 0).
    pub fn initial() -> UserExt {
        UserExt { area: Box::new(INITIAL), fs_base: 0 }
    }

    /// Takes the live state (this core's registers) into `self`.
    #[inline(always)]
    pub fn save(&mut self) {
        save_area(&mut self.area);
        self.fs_base = read_fs_base();
    }

    /// Makes `self` the live state on this core.
    #[inline(always)]
    pub fn restore(&self) {
        restore_area(&self.area);
        write_fs_base(self.fs_base);
    }
}

/// Makes the initial state live on this core (a protected control
/// transfer's callee starts from it).
#[inline(always)]
pub fn load_initial() {
    restore_area(&INITIAL_AREA);
    write_fs_base(0);
}
