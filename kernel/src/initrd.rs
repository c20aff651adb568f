//! The initrd: a POSIX ustar archive.
//!
//! `cargo xtask build` packs the initrd as a plain ustar archive: a `README`
//! naming the format version, then one regular file per application, named
//! after the application, holding its ELF. The kernel finds files by name
//! with [`find`]; everything else in an archive (directories, links) is
//! skipped. The archive comes from outside the kernel, so every header is
//! checked (checksum, octal fields, sizes within the archive) and a bad one
//! ends the walk with an error instead of a wrong answer.
//!
//! ```text
//! 512-byte header: name[100] mode[8] uid[8] gid[8] size[12] mtime[12]
//!                  chksum[8] typeflag[1] linkname[100] magic[6]="ustar\0" ...
//!                  prefix[155] (at 345)
//! then the data, padded to 512; two zero blocks end the archive.
//! ```

const BLOCK: usize = 512;

/// Why an archive was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitrdError {
    /// A header is not a ustar header (magic or checksum wrong).
    BadHeader {
        /// Byte offset of the header.
        offset: usize,
    },
    /// A header's size field is not octal or runs past the archive's end.
    BadSize {
        /// Byte offset of the header.
        offset: usize,
    },
    /// A name is not UTF-8.
    BadName {
        /// Byte offset of the header.
        offset: usize,
    },
}

/// One regular file in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct File<'a> {
    /// The file's name (prefix and name joined by `/` when a prefix is set).
    pub name: &'a str,
    /// The name's prefix field (usually empty).
    pub prefix: &'a str,
    /// The file's contents.
    pub data: &'a [u8],
}

impl File<'_> {
    /// Whether this file's full path is `path`.
    pub fn is(&self, path: &str) -> bool {
        if self.prefix.is_empty() {
            self.name == path
        } else {
            path.len() == self.prefix.len() + 1 + self.name.len()
                && path.starts_with(self.prefix)
                && path.as_bytes()[self.prefix.len()] == b'/'
                && path.ends_with(self.name)
        }
    }
}

/// Iterates over the regular files of `archive`.
pub fn files(archive: &[u8]) -> Files<'_> {
    Files { archive, offset: 0, done: false }
}

/// Finds the regular file at `path`.
pub fn find<'a>(archive: &'a [u8], path: &str) -> Result<Option<File<'a>>, InitrdError> {
    for file in files(archive) {
        let file = file?;
        if file.is(path) {
            return Ok(Some(file));
        }
    }
    Ok(None)
}

/// Iterator over an archive's regular files; see [`files`].
pub struct Files<'a> {
    archive: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Iterator for Files<'a> {
    type Item = Result<File<'a>, InitrdError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let offset = self.offset;
            let Some(header) = self.archive.get(offset..offset + BLOCK) else {
                self.done = true; // archive ends without the zero blocks: accept
                return None;
            };
            if header.iter().all(|&b| b == 0) {
                self.done = true;
                return None;
            }
            let parsed = parse_header(self.archive, offset);
            match parsed {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok((file, typeflag, next)) => {
                    self.offset = next;
                    if typeflag == b'0' || typeflag == 0 {
                        return Some(Ok(file));
                    }
                }
            }
        }
        None
    }
}

fn parse_header(archive: &[u8], offset: usize) -> Result<(File<'_>, u8, usize), InitrdError> {
    let h = &archive[offset..offset + BLOCK];
    if &h[257..262] != b"ustar" {
        return Err(InitrdError::BadHeader { offset });
    }
    let stored = octal(&h[148..156]).ok_or(InitrdError::BadHeader { offset })?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { u64::from(b' ') } else { u64::from(b) })
        .sum();
    if sum != stored {
        return Err(InitrdError::BadHeader { offset });
    }
    let size = octal(&h[124..136]).ok_or(InitrdError::BadSize { offset })?;
    let data_start = offset + BLOCK;
    let data_end = usize::try_from(size)
        .ok()
        .and_then(|s| data_start.checked_add(s))
        .filter(|&end| end <= archive.len())
        .ok_or(InitrdError::BadSize { offset })?;
    let name = field_str(&h[0..100]).ok_or(InitrdError::BadName { offset })?;
    let prefix = field_str(&h[345..500]).ok_or(InitrdError::BadName { offset })?;
    let next = data_start + (data_end - data_start).next_multiple_of(BLOCK);
    Ok((File { name, prefix, data: &archive[data_start..data_end] }, h[156], next))
}

fn field_str(field: &[u8]) -> Option<&str> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    core::str::from_utf8(&field[..len]).ok()
}

/// Parses a NUL- or space-terminated octal field.
fn octal(field: &[u8]) -> Option<u64> {
    let digits = field.iter().skip_while(|&&b| b == b' ').take_while(|&&b| b != 0 && b != b' ');
    let mut value: u64 = 0;
    let mut any = false;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a ustar header + data the way `tar` does.
    fn entry(name: &str, data: &[u8], typeflag: u8) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut out = h;
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
        out
    }

    fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut a: Vec<u8> = entries.concat();
        a.extend_from_slice(&[0u8; 2 * BLOCK]);
        a
    }

    #[test]
    fn finds_files_and_skips_directories() {
        let a = archive(&[
            entry("README", b"exo initrd v1\n", b'0'),
            entry("bin/", b"", b'5'),
            entry("hello", &[0x7f, b'E', b'L', b'F'], b'0'),
        ]);
        let names: Vec<_> = files(&a).map(|f| f.unwrap().name).collect();
        assert_eq!(names, ["README", "hello"]);
        assert_eq!(find(&a, "hello").unwrap().unwrap().data, b"\x7fELF");
        assert_eq!(find(&a, "missing").unwrap(), None);
    }

    #[test]
    fn corrupt_checksum_and_magic_are_errors() {
        let mut a = archive(&[entry("README", b"x", b'0')]);
        a[0] = b'Q';
        assert_eq!(find(&a, "README"), Err(InitrdError::BadHeader { offset: 0 }));
        let mut a = archive(&[entry("README", b"x", b'0')]);
        a[257] = b'X';
        assert_eq!(find(&a, "README"), Err(InitrdError::BadHeader { offset: 0 }));
    }

    #[test]
    fn size_past_the_end_is_an_error_not_a_panic() {
        let mut a = entry("big", b"abc", b'0');
        // Claim 8 GiB of data, with a correct checksum.
        a[124..135].copy_from_slice(b"77777777777");
        a[148..156].copy_from_slice(b"        ");
        let sum: u32 = a[..BLOCK].iter().map(|&b| u32::from(b)).sum();
        a[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        assert_eq!(find(&a, "big"), Err(InitrdError::BadSize { offset: 0 }));
    }

    #[test]
    fn truncated_and_empty_archives() {
        assert_eq!(files(&[]).count(), 0);
        let a = entry("README", b"hi", b'0');
        assert_eq!(find(&a[..100], "README").unwrap(), None);
        assert!(find(&a, "README").unwrap().is_some());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u32 = 12345;
        for len in [0, 1, 511, 512, 513, 1024, 4096] {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (x >> 16) as u8
                    })
                    .collect();
                for f in files(&bytes) {
                    let _ = f;
                }
            }
        }
    }

    #[test]
    fn prefixed_names_match_full_paths() {
        let f = File { name: "hello", prefix: "apps", data: b"" };
        assert!(f.is("apps/hello"));
        assert!(!f.is("apps-hello"));
        assert!(!f.is("hello"));
    }
}
