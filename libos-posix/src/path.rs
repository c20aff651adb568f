//! Lexical path handling: splitting, length limits, and normalisation.
//!
//! This module owns only what can be said about a path without a file
//! system: Linux paths are byte strings, components are separated by one or
//! more `/`, a path of `PATH_MAX` (4096) bytes or more is `ENAMETOOLONG`,
//! as is a component over `NAME_MAX` (255), and the empty path is `ENOENT`
//! (`fs/namei.c:getname_flags`, `link_path_walk`). Resolution against the
//! tree (symbolic links, `..` through them) is [`crate::fs::Fs`]'s; with no
//! symbolic links on the way, it agrees with [`normalize`] (a property test
//! in `fs` holds this).

use crate::linux::{NAME_MAX, PATH_MAX, SysResult, errno};
use alloc::vec::Vec;

/// The non-empty components of `path` (`.` and `..` included).
pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&c| c == b'/').filter(|c| !c.is_empty())
}

/// Checks the limits Linux applies before any lookup.
pub fn check(path: &[u8]) -> SysResult<()> {
    if path.is_empty() {
        return Err(errno::ENOENT);
    }
    if path.len() >= PATH_MAX || components(path).any(|c| c.len() > NAME_MAX) {
        return Err(errno::ENAMETOOLONG);
    }
    Ok(())
}

/// Splits `path` into the part naming the parent and the last component;
/// the last component is empty when `path` is only slashes. A trailing `/`
/// is reported separately (it requires the target to be a directory).
pub fn split_last(path: &[u8]) -> (&[u8], &[u8], bool) {
    let trailing = path.len() > 1 && path.ends_with(b"/");
    let mut end = path.len();
    while end > 0 && path[end - 1] == b'/' {
        end -= 1;
    }
    let start = path[..end].iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
    let dir = if start == 0 && path.first() == Some(&b'/') { &path[..1] } else { &path[..start] };
    (dir, &path[start..end], trailing)
}

/// The absolute, normal form of `path` taken relative to the absolute normal
/// path `cwd`: no empty, `.` or `..` components, no trailing `/` (except the
/// root itself); `..` at the root stays at the root.
pub fn normalize(cwd: &[u8], path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    let start: &[u8] = if path.first() == Some(&b'/') { b"" } else { cwd };
    for c in components(start).chain(components(path)) {
        match c {
            b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limits() {
        assert_eq!(check(b""), Err(errno::ENOENT));
        assert_eq!(check(b"/a"), Ok(()));
        assert_eq!(check(&[b'a'; 256]), Err(errno::ENAMETOOLONG));
        assert_eq!(check(&[b'a'; 255]), Ok(()));
        let long: Vec<u8> = b"/a".iter().copied().cycle().take(4096).collect();
        assert_eq!(check(&long), Err(errno::ENAMETOOLONG));
    }

    #[test]
    fn split() {
        assert_eq!(split_last(b"/a/b"), (&b"/a/"[..], &b"b"[..], false));
        assert_eq!(split_last(b"a"), (&b""[..], &b"a"[..], false));
        assert_eq!(split_last(b"/a"), (&b"/"[..], &b"a"[..], false));
        assert_eq!(split_last(b"a/b//"), (&b"a/"[..], &b"b"[..], true));
        assert_eq!(split_last(b"/"), (&b"/"[..], &b""[..], false));
        assert_eq!(split_last(b"//"), (&b"/"[..], &b""[..], true));
    }

    #[test]
    fn normal_forms() {
        assert_eq!(normalize(b"/", b"a/./b/../c/"), b"/a/c");
        assert_eq!(normalize(b"/x/y", b"../z"), b"/x/z");
        assert_eq!(normalize(b"/x", b"/../../"), b"/");
        assert_eq!(normalize(b"/x", b"."), b"/x");
    }

    fn path() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(&b"a"[..]),
                Just(&b"bc"[..]),
                Just(&b"."[..]),
                Just(&b".."[..]),
                Just(&b"/"[..]),
                Just(&b"//"[..])
            ],
            0..12,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn normalize_invariants(p in path(), q in path()) {
            let cwd = normalize(b"/", &p);
            let n = normalize(&cwd, &q);
            prop_assert!(n.starts_with(b"/"));
            prop_assert!(n == b"/" || !n.ends_with(b"/"));
            prop_assert!(components(&n).all(|c| c != b"." && c != b".."));
            prop_assert!(!n.windows(2).any(|w| w == b"//"));
            // Idempotent, and independent of the cwd once absolute.
            prop_assert_eq!(normalize(b"/zz", &n), n.clone());
            // Relative resolution is resolution of the joined path.
            let mut joined = cwd.clone();
            joined.push(b'/');
            joined.extend_from_slice(&q);
            if !q.starts_with(b"/") {
                prop_assert_eq!(normalize(b"/", &joined), n);
            }
        }
    }
}
