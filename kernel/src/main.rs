//! The exokernel binary.
//!
//! Built for `x86_64-unknown-none`, this is the machine-facing half of the
//! kernel: boot, descriptor tables, interrupts, the local APIC, SMP bring-up,
//! per-core state and mailboxes. All of it lives in [`machine`]; the
//! hardware-free logic it relies on is the `kernel` library (`src/lib.rs`),
//! which is unit-tested on the host.
//!
//! On the host this binary is an empty program that says how to run the
//! kernel, so that `cargo test --workspace` and `cargo clippy --workspace`
//! work without a target flag.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod machine;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the kernel runs only on x86_64-unknown-none: use `cargo xtask run`");
    std::process::exit(2);
}
