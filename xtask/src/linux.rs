//! The Linux guest of `cargo xtask bench --vs linux`: its kernel, its
//! initramfs, and the cache of both under `target/linux/`.
//!
//! - The kernel is Debian's: `apt-get download` of the
//!   `linux-image-*-amd64` package that `linux-image-amd64` depends on; its
//!   `/boot/vmlinuz-*` wraps an xz-compressed `vmlinux` (the approach of the
//!   kernel's `scripts/extract-vmlinux`: find the xz magic, `xz -dc` from
//!   there, keep the output if it is an ELF). QEMU boots that ELF through
//!   PVH, as it boots ours, so it must carry the `XEN_ELFNOTE_PHYS32_ENTRY`
//!   note, which [`has_pvh_note`] checks.
//! - The initramfs (cpio `newc`, written by [`cpio`]) holds `/dev/console`
//!   and `/init`, `benches/linux/init.c` built with
//!   `musl-gcc -static -O2` (`musl-tools` is installed with apt-get when
//!   missing, as QEMU is).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The meta-package whose dependency is the kernel we boot.
const META: &str = "linux-image-amd64";
/// The C source of the guest's `/init`.
pub const INIT_SOURCE: &str = "benches/linux/init.c";
/// The xz stream magic.
const XZ_MAGIC: &[u8] = b"\xfd7zXZ\0";

/// The Linux guest's files.
pub struct Guest {
    /// The PVH-bootable `vmlinux`.
    pub vmlinux: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// The kernel package, e.g. `linux-image-6.1.0-57-amd64 6.1.192-3`.
    pub package: String,
}

fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `linux-image-*` package that `apt-cache depends` says the meta
/// package depends on.
pub fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_string)
}

/// Makes sure `target/linux/` holds a PVH `vmlinux` from Debian's package
/// and returns it with the package's name and version.
fn kernel(dir: &Path) -> Result<(PathBuf, String), String> {
    let vmlinux = dir.join("vmlinux");
    let stamp = dir.join("vmlinux.package");
    if vmlinux.is_file()
        && let Ok(package) = std::fs::read_to_string(&stamp)
    {
        return Ok((vmlinux, package.trim().to_string()));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let depends = |dir: &Path| {
        run_ok(Command::new("apt-cache").args(["depends", META]).current_dir(dir))
            .ok()
            .and_then(|t| parse_depends(&t))
    };
    let package = match depends(dir) {
        Some(p) => p,
        None => {
            println!("xtask: apt-cache knows no {META}; running apt-get update");
            run_ok(Command::new("apt-get").arg("update"))?;
            depends(dir).ok_or_else(|| format!("apt-cache depends {META}: no linux-image-*"))?
        }
    };
    println!("xtask: downloading {package} (Debian's kernel for the Linux guest)...");
    run_ok(Command::new("apt-get").args(["download", &package]).current_dir(dir))?;
    let deb = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
            })
        })
        .ok_or_else(|| format!("apt-get download {package} left no .deb in {}", dir.display()))?;
    let version = deb
        .file_name()
        .and_then(|n| n.to_string_lossy().split('_').nth(1).map(str::to_string))
        .unwrap_or_default();
    let vmlinuz = vmlinuz_from_deb(&deb)?;
    let elf = extract_vmlinux(&vmlinuz)?;
    std::fs::write(&vmlinux, elf).map_err(|e| format!("writing {}: {e}", vmlinux.display()))?;
    let label = format!("{package} {version}");
    std::fs::write(&stamp, &label).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&deb);
    println!("xtask: extracted {}", vmlinux.display());
    Ok((vmlinux, label))
}

/// `/boot/vmlinuz-*` of a kernel `.deb` (through `dpkg-deb --fsys-tarfile`).
fn vmlinuz_from_deb(deb: &Path) -> Result<Vec<u8>, String> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut archive = tar::Archive::new(stdout);
    let mut found = None;
    for entry in archive.entries().map_err(|e| format!("{}: {e}", deb.display()))? {
        let mut entry = entry.map_err(|e| format!("{}: {e}", deb.display()))?;
        let path = entry.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
        if path.trim_start_matches("./").starts_with("boot/vmlinuz-") {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
            found = Some(bytes);
            break;
        }
    }
    // We may stop reading early: dpkg-deb then dies of SIGPIPE.
    let _ = child.kill();
    let _ = child.wait();
    found.ok_or_else(|| format!("{} has no boot/vmlinuz-*", deb.display()))
}

/// The ELF `vmlinux` inside a `vmlinuz`: the first xz stream that
/// decompresses (`xz -dc`; trailing data makes xz complain, which is
/// expected) to an ELF with a PVH entry note.
pub fn extract_vmlinux(vmlinuz: &[u8]) -> Result<Vec<u8>, String> {
    let mut at = 0;
    while let Some(pos) = find(&vmlinuz[at..], XZ_MAGIC) {
        let start = at + pos;
        let out = unxz(&vmlinuz[start..])?;
        if out.starts_with(b"\x7fELF") {
            if !has_pvh_note(&out) {
                return Err("the vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): \
                            QEMU cannot boot it with -kernel"
                    .into());
            }
            return Ok(out);
        }
        at = start + 1;
    }
    Err("no xz-compressed ELF in the vmlinuz".into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `xz -dc` of `data`, keeping whatever it wrote even if it then failed.
fn unxz(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("xz")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run xz (install xz-utils): {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = data.to_vec();
    // Feed from a thread: xz writes while we would still be writing.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    child.stdout.take().expect("piped").read_to_end(&mut out).map_err(|e| e.to_string())?;
    let _ = child.wait();
    let _ = feeder.join();
    Ok(out)
}

/// Whether a 64-bit little-endian ELF has a `Xen` note of type 18
/// (`XEN_ELFNOTE_PHYS32_ENTRY`, the PVH entry point) in a `PT_NOTE`
/// segment.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at =
        |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
    let u64_at =
        |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph) != Some(4) {
            continue; // not PT_NOTE
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else { continue };
        let mut n = off;
        while n + 12 <= off + size {
            let (Some(namesz), Some(descsz), Some(ty)) = (u32_at(n), u32_at(n + 4), u32_at(n + 8))
            else {
                break;
            };
            let name = elf.get(n + 12..n + 12 + namesz);
            if ty == 18 && name == Some(b"Xen\0") {
                return true;
            }
            n += 12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
        }
    }
    false
}

/// A cpio `newc` archive, as the Linux kernel unpacks an initramfs.
pub mod cpio {
    /// One archive member.
    pub enum Member<'a> {
        /// A directory.
        Dir(&'a str),
        /// A character device `(path, major, minor)`.
        CharDev(&'a str, u32, u32),
        /// An executable file.
        Exec(&'a str, &'a [u8]),
    }

    fn pad4(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    fn header(out: &mut Vec<u8>, ino: u32, mode: u32, rdev: (u32, u32), name: &str, data: &[u8]) {
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime: fixed, so the archive is the same for the same init
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(out);
        out.extend_from_slice(data);
        pad4(out);
    }

    /// The archive of `members`, ending with the `TRAILER!!!` entry.
    pub fn write(members: &[Member]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let ino = i as u32 + 1;
            match m {
                Member::Dir(p) => header(&mut out, ino, 0o040_755, (0, 0), p, &[]),
                Member::CharDev(p, ma, mi) => header(&mut out, ino, 0o020_600, (*ma, *mi), p, &[]),
                Member::Exec(p, data) => header(&mut out, ino, 0o100_755, (0, 0), p, data),
            }
        }
        header(&mut out, 0, 0, (0, 0), "TRAILER!!!", &[]);
        out
    }
}

/// Makes sure `musl-gcc` is there (installing `musl-tools` as root with
/// apt-get when it is not).
pub(crate) fn ensure_musl() -> Result<(), String> {
    if crate::install::which("musl-gcc").is_some() {
        return Ok(());
    }
    if crate::install::which("apt-get").is_none() {
        return Err("musl-gcc not found: install musl-tools".into());
    }
    println!("xtask: musl-gcc not found; installing musl-tools with apt-get");
    let install = || {
        run_ok(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "musl-tools",
        ]))
    };
    if install().is_err() {
        run_ok(Command::new("apt-get").arg("update"))?;
        install()?;
    }
    Ok(())
}

/// Builds `/init` from [`INIT_SOURCE`] (static, `-Wall -Wextra -Werror`).
fn build_init(root: &Path, dir: &Path) -> Result<Vec<u8>, String> {
    ensure_musl()?;
    let out = dir.join("benchinit");
    let status = Command::new("musl-gcc")
        .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(root.join(INIT_SOURCE))
        .arg("-lpthread")
        .status()
        .map_err(|e| format!("cannot run musl-gcc: {e}"))?;
    if !status.success() {
        return Err(format!("building {INIT_SOURCE} failed ({status})"));
    }
    std::fs::read(&out).map_err(|e| format!("reading {}: {e}", out.display()))
}

/// The Linux guest: the cached kernel (downloaded and extracted the first
/// time) and a fresh initramfs; with `workloads` (init.c's `busybox`
/// group) also Debian's busybox-static as `/bin/busybox` and
/// benches/posix/workloads.c as `/bin/workloads`.
pub fn prepare(root: &Path, target: &Path, workloads: bool) -> Result<Guest, String> {
    let dir = target.join("linux");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let (vmlinux, package) = kernel(&dir)?;
    let init = build_init(root, &dir)?;
    let mut members = vec![
        cpio::Member::Dir("dev"),
        cpio::Member::CharDev("dev/console", 5, 1),
        cpio::Member::Exec("init", &init),
    ];
    let extra = if workloads {
        let bb = crate::posix::busybox(target)?;
        let busybox = std::fs::read(&bb).map_err(|e| format!("{}: {e}", bb.display()))?;
        Some((busybox, crate::workloads::build(root, target)?))
    } else {
        None
    };
    if let Some((busybox, program)) = &extra {
        members.push(cpio::Member::Dir("bin"));
        members.push(cpio::Member::Exec("bin/busybox", busybox));
        members.push(cpio::Member::Exec("bin/workloads", program));
    }
    let archive = cpio::write(&members);
    let initramfs = dir.join("initramfs.cpio");
    std::fs::write(&initramfs, archive)
        .map_err(|e| format!("writing {}: {e}", initramfs.display()))?;
    Ok(Guest { vmlinux, initramfs, package })
}

/// The Linux guest's command line: the serial console, quiet, our sample
/// count, and the groups to run (`None`: all). `-icount shift=0` needs
/// nothing more: Debian's 6.1 boots under it (to `/init` in about two
/// guest seconds) and its TSC runs at the 1 GHz instruction clock, as ours.
pub fn append(samples: Option<u32>, groups: Option<&str>) -> String {
    let mut a = "console=ttyS0 quiet".to_string();
    if let Some(n) = samples {
        a.push_str(&format!(" bench_samples={n}"));
    }
    if let Some(g) = groups {
        a.push_str(&format!(" benches={g}"));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_NOTE segment holding `notes`.
    fn elf_with_notes(notes: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
        let mut note = Vec::new();
        for (name, ty, desc) in notes {
            note.extend_from_slice(&(name.len() as u32).to_le_bytes());
            note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            note.extend_from_slice(&ty.to_le_bytes());
            note.extend_from_slice(name);
            while note.len() % 4 != 0 {
                note.push(0);
            }
            note.extend_from_slice(desc);
            while note.len() % 4 != 0 {
                note.push(0);
            }
        }
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 64;
        elf[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        elf[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        elf[ph + 32..ph + 40].copy_from_slice(&(note.len() as u64).to_le_bytes());
        elf.extend_from_slice(&note);
        elf.extend_from_slice(&[0x5a; 4096]); // a body that compresses
        elf
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut child = Command::new("xz")
            .args(["-zc", "--check=crc32"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("xz");
        let mut stdin = child.stdin.take().unwrap();
        let input = data.to_vec();
        let t = std::thread::spawn(move || stdin.write_all(&input).unwrap());
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        t.join().unwrap();
        assert!(child.wait().unwrap().success());
        out
    }

    #[test]
    fn pvh_note_is_found() {
        let pvh = elf_with_notes(&[(b"Xen\0", 6, b"linux\0"), (b"Xen\0", 18, &[0; 8])]);
        assert!(has_pvh_note(&pvh));
        assert!(!has_pvh_note(&elf_with_notes(&[(b"Xen\0", 6, b"linux\0")])));
        assert!(!has_pvh_note(&elf_with_notes(&[(b"GNU\0", 18, &[0; 4])])));
        assert!(!has_pvh_note(b"\x7fELF\x02\x01"));
    }

    #[test]
    fn vmlinux_is_extracted_from_a_wrapped_xz_stream() {
        let elf = elf_with_notes(&[(b"Xen\0", 18, &[1, 2, 3, 4])]);
        // A bzImage-like wrapper: a setup header, a false xz magic, the
        // real stream, then trailing data xz complains about.
        let mut vmlinuz = b"MZ setup code...".to_vec();
        vmlinuz.extend_from_slice(XZ_MAGIC);
        vmlinuz.extend_from_slice(b"not really xz");
        vmlinuz.extend_from_slice(&xz(&elf));
        vmlinuz.extend_from_slice(&[0xff; 64]);
        assert_eq!(extract_vmlinux(&vmlinuz).unwrap(), elf);

        let no_pvh = elf_with_notes(&[(b"Xen\0", 6, b"linux\0")]);
        let err = extract_vmlinux(&xz(&no_pvh)).unwrap_err();
        assert!(err.contains("PVH"), "{err}");
        assert!(extract_vmlinux(&xz(b"not an elf")).is_err());
        assert!(extract_vmlinux(b"nothing here").is_err());
    }

    #[test]
    fn cpio_newc_layout() {
        let a = cpio::write(&[
            cpio::Member::Dir("dev"),
            cpio::Member::CharDev("dev/console", 5, 1),
            cpio::Member::Exec("init", b"\x7fELFabc"),
        ]);
        // Parse it back: every header is 110 bytes of "070701" + 13 hex
        // fields, then the name, padded to 4, then the data, padded to 4.
        let mut at = 0;
        let mut got = Vec::new();
        loop {
            assert_eq!(&a[at..at + 6], b"070701", "at {at}");
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&a[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap(),
                    16,
                )
                .unwrap() as usize
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name =
                std::str::from_utf8(&a[at + 110..at + 110 + namesize - 1]).unwrap().to_string();
            assert_eq!(a[at + 110 + namesize - 1], 0);
            let data_at = (at + 110 + namesize).next_multiple_of(4);
            let data = a[data_at..data_at + size].to_vec();
            at = (data_at + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                break;
            }
            got.push((name, mode, rmaj, rmin, data));
        }
        assert_eq!(at, a.len());
        assert_eq!(got[0], ("dev".into(), 0o040755, 0, 0, vec![]));
        assert_eq!(got[1], ("dev/console".into(), 0o020600, 5, 1, vec![]));
        assert_eq!(got[2], ("init".into(), 0o100755, 0, 0, b"\x7fELFabc".to_vec()));
        // cpio(1) agrees, where it is installed.
        if crate::install::which("cpio").is_some() {
            let mut child = Command::new("cpio")
                .args(["-t", "--quiet"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&a).unwrap();
            let out = child.wait_with_output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), "dev\ndev/console\ninit\n");
        }
    }

    #[test]
    fn apt_depends_and_command_line() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(parse_depends(text).as_deref(), Some("linux-image-6.1.0-57-amd64"));
        assert_eq!(parse_depends("linux-image-amd64\n"), None);
        assert_eq!(append(None, None), "console=ttyS0 quiet");
        assert_eq!(
            append(Some(100), Some("getpid,munmap")),
            "console=ttyS0 quiet bench_samples=100 benches=getpid,munmap"
        );
    }
}
