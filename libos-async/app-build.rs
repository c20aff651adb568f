//! The build script of every ring-3 program in `apps/`, `tests/` and
//! `benches/` (`build = "../../libos-async/app-build.rs"` in its manifest):
//! links the ring-3 binary with libos-async's user linker script when
//! building for the bare-metal target.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{dir}/../../libos-async/user.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default() == "none" {
        println!("cargo:rustc-link-arg-bins=-T{script}");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
    println!("cargo:rerun-if-changed={script}");
}
