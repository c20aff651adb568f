//! The initrd: how applications reach the kernel.
//!
//! # Format
//!
//! The initrd (`target/initrd.tar`, handed to QEMU with `-initrd`) is a plain
//! POSIX **ustar** archive:
//!
//! - 512-byte ustar headers (magic `"ustar\0"`, version `"00"`), regular files
//!   only (type flag `'0'`), no directories, no links, no pax or GNU
//!   extensions; names are at most 100 bytes, so the `prefix` field is empty;
//! - deterministic: mode `0644`, uid/gid 0, mtime 0, so the same inputs give
//!   the same bytes;
//! - terminated by two zero blocks.
//!
//! Entries:
//!
//! - `README` first, always: the text `exo initrd v1\n` followed by one line
//!   `apps:` then the packed app names, each preceded by one space, then `\n`
//!   (`apps:\n` when there are none);
//! - then one file per application, named after the application (no
//!   directory, no extension), holding its static ring-3 ELF, in the order
//!   listed on the `apps:` line.
//!
//! What `cargo xtask build` packs, in this order:
//!
//! - every ring-3 program of the workspace (`apps/*/`, `tests/*/`,
//!   `benches/*/`, built for `x86_64-unknown-none` in one cargo invocation),
//!   named after its binary and sorted by that name;
//! - four deliberately malformed ELFs made from `hello` for the kernel's
//!   loader tests (see `badelf`): `bad_truncated` (its first 100 bytes),
//!   `bad_machine` (`e_machine` = 0x28, ARM), `bad_entry` (`e_entry` =
//!   0x10) and `bad_overlap` (the second `PT_LOAD`'s `p_vaddr` rewritten to
//!   the first's);
//! - `tiny_exit`, a hand-made 170-byte program for `libos_async::spawn`
//!   (see `badelf::tiny_exit`);
//! - the prebuilt ELFs given with `--app`, named after their file stem.

use std::io;
use std::path::Path;

/// First line of the `README` entry; bump the version when the format changes.
pub const MAGIC_LINE: &str = "exo initrd v1";

/// One application to pack: its name (the entry name) and its ELF bytes.
#[derive(Debug, Clone)]
pub struct App {
    /// Entry name inside the archive; also how the kernel refers to the app.
    pub name: String,
    /// The application's ELF image.
    pub elf: Vec<u8>,
}

/// The text of the `README` entry for `apps`.
pub fn readme(apps: &[App]) -> String {
    let mut s = format!("{MAGIC_LINE}\napps:");
    for app in apps {
        s.push(' ');
        s.push_str(&app.name);
    }
    s.push('\n');
    s
}

/// Checks that `name` is usable as an entry name: non-empty, at most 100
/// bytes, no `/`, no whitespace (the `apps:` line is space-separated), not
/// `README`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 100 {
        return Err(format!("app name {name:?} must be 1 to 100 bytes"));
    }
    if name == "README" {
        return Err("app name README is reserved".into());
    }
    if name.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "app name {name:?} must not contain '/', whitespace or control characters"
        ));
    }
    Ok(())
}

/// Builds the archive bytes for `apps`.
pub fn pack(apps: &[App]) -> Result<Vec<u8>, String> {
    let mut seen = std::collections::BTreeSet::new();
    for app in apps {
        check_name(&app.name)?;
        if !seen.insert(app.name.as_str()) {
            return Err(format!("app {:?} given twice", app.name));
        }
    }
    let mut builder = tar::Builder::new(Vec::new());
    let io_err = |e: io::Error| format!("packing initrd: {e}");
    append(&mut builder, "README", readme(apps).as_bytes()).map_err(io_err)?;
    for app in apps {
        align_elf_data(&mut builder, &app.elf).map_err(io_err)?;
        append(&mut builder, &app.name, &app.elf).map_err(io_err)?;
    }
    builder.into_inner().map_err(io_err)
}

/// Page size: ELF files' data start on a multiple of it in the archive.
const PAGE: usize = 4096;

/// The type flag of a padding entry ([`align_elf_data`]): a vendor type
/// (POSIX leaves `A`–`Z` to vendors; GNU tar uses no `P`), which the
/// kernel's and libos-posix's readers skip as they skip every type they do
/// not take.
pub const PAD_TYPE: u8 = b'P';

/// Before an ELF file (`data` starting with its magic), appends a padding
/// entry when needed so that the file's data, after its 512-byte header,
/// starts at a multiple of [`PAGE`] in the archive. The kernel places the
/// initrd on a page boundary, so the file's pages are then whole frames:
/// read-only segments can be mapped straight from the initrd (`Map` of an
/// initrd frame) instead of copied.
pub fn align_elf_data(builder: &mut tar::Builder<Vec<u8>>, data: &[u8]) -> io::Result<()> {
    if !data.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let at = builder.get_ref().len();
    if (at + 512).is_multiple_of(PAGE) {
        return Ok(());
    }
    // The pad's header (512) and data (`len`) bring the file's header to
    // PAGE - 512 mod PAGE.
    let len = (2 * PAGE - (at + 1024) % PAGE) % PAGE;
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::new(PAD_TYPE));
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(len as u64);
    builder.append_data(&mut header, ".pad", &vec![0u8; len][..])
}

/// Appends one regular file with deterministic metadata.
fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, name, data)
}

/// Packs `apps` and writes the archive to `out`.
pub fn write(out: &Path, apps: &[App]) -> Result<(), String> {
    let bytes = pack(apps)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(out, bytes).map_err(|e| format!("writing {}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_lists_apps() {
        assert_eq!(readme(&[]), "exo initrd v1\napps:\n");
        let apps =
            [App { name: "hello".into(), elf: vec![1] }, App { name: "echo".into(), elf: vec![2] }];
        assert_eq!(readme(&apps), "exo initrd v1\napps: hello echo\n");
    }

    #[test]
    fn archive_is_ustar_with_readme_then_apps() {
        let apps = [App { name: "hello".into(), elf: b"\x7fELF...".to_vec() }];
        let bytes = pack(&apps).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        // ustar magic at offset 257 of the first header.
        assert_eq!(&bytes[257..263], b"ustar\0");
        assert_eq!(&bytes[263..265], b"00");
        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, Vec<u8>)> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type().as_byte() != PAD_TYPE)
            .map(|mut e| {
                let name = e.path().unwrap().to_string_lossy().into_owned();
                if name == "hello" {
                    assert_eq!(e.raw_file_position() % PAGE as u64, 0, "an ELF's data on a page");
                }
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                (name, data)
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("README".into(), b"exo initrd v1\napps: hello\n".to_vec()),
                ("hello".into(), b"\x7fELF...".to_vec()),
            ]
        );
        // Deterministic.
        assert_eq!(bytes, pack(&apps).unwrap());
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["", "a/b", "a b", "README", &"x".repeat(101)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let dup = [App { name: "a".into(), elf: vec![] }, App { name: "a".into(), elf: vec![] }];
        assert!(pack(&dup).is_err());
    }
}
