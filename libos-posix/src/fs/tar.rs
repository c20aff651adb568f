//! Reading a ustar archive (the initrd) without copying it.
//!
//! This module owns the parse of the untrusted archive: every header's
//! checksum, octal fields and sizes are checked against the archive's
//! length, and a bad one stops the walk with an error instead of a wrong
//! tree. File data are returned as slices of the archive.
//!
//! ```text
//! 512-byte header: name[100]@0 mode[8]@100 uid@108 gid@116 size[12]@124
//!                  mtime[12]@136 chksum[8]@148 typeflag@156 linkname[100]@157
//!                  magic "ustar"@257 ... prefix[155]@345
//! data padded to 512; a zero block ends the archive.
//! ```
//!
//! Type flags handled: `0`/NUL regular, `1` hard link, `2` symbolic link,
//! `5` directory; GNU `L` long names and `K` long link names (GNU tar writes
//! them for names over 100 bytes). Other types (devices, FIFOs, pax headers)
//! are returned as [`Kind::Other`] for the caller to skip.

use alloc::vec::Vec;

const BLOCK: usize = 512;

/// Why an archive was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarError {
    /// A header's magic or checksum is wrong (byte offset of the header).
    BadHeader(usize),
    /// A numeric field is not octal, or data runs past the end.
    BadSize(usize),
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A regular file and its contents.
    File(&'a [u8]),
    /// A hard link to the earlier entry with this name.
    HardLink(&'a [u8]),
    /// A symbolic link with this target.
    Symlink(&'a [u8]),
    /// A directory.
    Dir,
    /// Anything else (skipped by the file system).
    Other(u8),
}

/// One archive entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The full name (prefix joined), as stored (may start with `./`).
    pub name: Vec<u8>,
    /// What it is.
    pub kind: Kind<'a>,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
}

fn field(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

fn octal(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut seen = false;
    for &c in b {
        match c {
            b'0'..=b'7' => {
                v = v.checked_mul(8)?.checked_add((c - b'0') as u64)?;
                seen = true;
            }
            b' ' | 0 if !seen => {}
            b' ' | 0 => break,
            _ => return None,
        }
    }
    Some(v)
}

/// Every entry of `archive`, in order.
pub fn entries(archive: &[u8]) -> Result<Vec<Entry<'_>>, TarError> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<&[u8]> = None;
    while at + BLOCK <= archive.len() {
        let h = &archive[at..at + BLOCK];
        if h.iter().all(|&c| c == 0) {
            break;
        }
        if &h[257..262] != b"ustar" {
            return Err(TarError::BadHeader(at));
        }
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &c)| if (148..156).contains(&i) { 32 } else { c as u64 })
            .sum();
        if octal(&h[148..156]) != Some(sum) {
            return Err(TarError::BadHeader(at));
        }
        let size = octal(&h[124..136]).ok_or(TarError::BadSize(at))? as usize;
        let data_at = at + BLOCK;
        let data = archive.get(data_at..data_at.checked_add(size).ok_or(TarError::BadSize(at))?);
        let data = data.ok_or(TarError::BadSize(at))?;
        let next = data_at + size.div_ceil(BLOCK) * BLOCK;
        let typ = h[156];
        match typ {
            b'L' => {
                long_name = Some(field(data).to_vec());
                at = next;
                continue;
            }
            b'K' => {
                long_link = Some(field(data));
                at = next;
                continue;
            }
            _ => {}
        }
        let name = long_name.take().unwrap_or_else(|| {
            let (prefix, name) = (field(&h[345..500]), field(&h[..100]));
            if prefix.is_empty() { name.to_vec() } else { [prefix, b"/", name].concat() }
        });
        let link = long_link.take().unwrap_or_else(|| field(&h[157..257]));
        let kind = match typ {
            b'0' | 0 | b'7' => Kind::File(data),
            b'1' => Kind::HardLink(link),
            b'2' => Kind::Symlink(link),
            b'5' => Kind::Dir,
            t => Kind::Other(t),
        };
        let mode = octal(&h[100..108]).ok_or(TarError::BadSize(at))? as u32 & 0o7777;
        let mtime = octal(&h[136..148]).ok_or(TarError::BadSize(at))?;
        out.push(Entry { name, kind, mode, mtime });
        at = next;
    }
    Ok(out)
}

/// One entry for [`build`]: (name ≤ 100 bytes, type flag, mode, link target, data).
pub type BuildEntry<'e> = (&'e [u8], u8, u32, &'e [u8], &'e [u8]);

/// Builds a ustar archive (for tests, and for glue that packs a tree).
pub fn build(entries: &[BuildEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(name, typ, mode, link, data) in entries {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        let oct = |h: &mut [u8], at: usize, width: usize, v: u64| {
            let s = alloc::format!("{:0w$o}\0", v, w = width - 1);
            h[at..at + width].copy_from_slice(s.as_bytes());
        };
        oct(&mut h, 100, 8, mode as u64);
        oct(&mut h, 108, 8, 0);
        oct(&mut h, 116, 8, 0);
        oct(&mut h, 124, 12, data.len() as u64);
        oct(&mut h, 136, 12, 1_700_000_000);
        h[156] = typ;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&c| c as u64).sum();
        let s = alloc::format!("{:06o}\0 ", sum);
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_zero_copy() {
        let a = build(&[
            (b"bin/", b'5', 0o755, b"", b""),
            (b"bin/busybox", b'0', 0o755, b"", b"ELF..."),
            (b"bin/sh", b'2', 0o777, b"busybox", b""),
            (b"bin/ls", b'1', 0o755, b"bin/busybox", b""),
        ]);
        let e = entries(&a).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].kind, Kind::Dir);
        assert_eq!(e[1].name, b"bin/busybox");
        assert_eq!(e[1].mode, 0o755);
        assert_eq!(e[1].mtime, 1_700_000_000);
        let Kind::File(d) = e[1].kind else { panic!() };
        assert_eq!(d, b"ELF...");
        // Zero-copy: the slice points into the archive.
        assert!(a.as_ptr_range().contains(&d.as_ptr()));
        assert_eq!(e[2].kind, Kind::Symlink(b"busybox"));
        assert_eq!(e[3].kind, Kind::HardLink(b"bin/busybox"));
    }

    #[test]
    fn refuses_corruption() {
        let mut a = build(&[(b"f", b'0', 0o644, b"", b"hello")]);
        a[0] = b'g';
        assert_eq!(entries(&a), Err(TarError::BadHeader(0)));
        let mut a = build(&[(b"f", b'0', 0o644, b"", b"hello")]);
        a.truncate(600);
        assert!(entries(&a).is_ok() || entries(&a).is_err());
        let a = build(&[(b"f", b'0', 0o644, b"", &[1u8; 700])]);
        assert_eq!(entries(&a[..900]), Err(TarError::BadSize(0)));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = entries(&bytes);
        }
    }
}
