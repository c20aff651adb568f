//! Links the POSIX runtime like every libos-async program (libos-async's
//! `user.ld`), but at [`LINK_BASE`] instead of `0x400000`: the Linux
//! programs it runs are fixed-address executables at `0x400000`, in the
//! same address space.

/// Where the runtime's image starts (1.75 GiB: below 2 GiB, as the small
/// code model of the static relocation model needs); `src/layout.rs` keeps
/// the program's break below it and its mmap area and stack above 4 GiB.
const LINK_BASE: &str = "0x70000000";

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{dir}/../../libos-async/user.ld");
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default() != "none" {
        return;
    }
    let text = std::fs::read_to_string(&script).expect("libos-async/user.ld");
    let moved = text.replacen(". = 0x400000;", &format!(". = {LINK_BASE};"), 1);
    assert_ne!(moved, text, "user.ld no longer starts at `. = 0x400000;`");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let path = format!("{out}/posix.ld");
    std::fs::write(&path, moved).expect("write the linker script");
    println!("cargo:rustc-link-arg-bins=-T{path}");
    println!("cargo:rustc-link-arg-bins=--no-pie");
}
