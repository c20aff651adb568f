//! The run request: which program to run, with which arguments,
//! environment and working directory.
//!
//! The runtime reads it from the initrd file [`PATH`] (written by
//! `cargo xtask posix`). The format is binary-safe: a sequence of records,
//! each one tag byte, the length in ASCII decimal, `:`, then exactly that
//! many bytes:
//!
//! ```text
//! A<len>:<bytes>   an argv element (the first is the program's path)
//! E<len>:<bytes>   an environment entry, K=V
//! C<len>:<bytes>   the working directory (the last one wins; default /)
//! ```
//!
//! Nothing separates records; trailing whitespace after the last record is
//! ignored (an editor's final newline).

use alloc::vec::Vec;
use core::fmt;

/// Where the request lives in the initrd's tree.
pub const PATH: &[u8] = b"/etc/exo-run";

/// A parsed request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// The arguments; `argv[0]` is the program's path.
    pub argv: Vec<Vec<u8>>,
    /// The environment entries.
    pub envp: Vec<Vec<u8>>,
    /// The working directory.
    pub cwd: Option<Vec<u8>>,
}

/// Why a request was refused (with the byte offset of the bad record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// An unknown tag byte.
    BadTag(usize),
    /// The length is missing, not decimal, too long, or not ended by `:`.
    BadLength(usize),
    /// The record runs past the end.
    Truncated(usize),
    /// No `A` record: no program.
    NoProgram,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::BadTag(at) => write!(f, "unknown record tag at byte {at}"),
            RequestError::BadLength(at) => write!(f, "bad record length at byte {at}"),
            RequestError::Truncated(at) => write!(f, "record at byte {at} runs past the end"),
            RequestError::NoProgram => f.write_str("no program (no A record)"),
        }
    }
}

/// Parses a request.
pub fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
    let mut r = Request::default();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at..].iter().all(u8::is_ascii_whitespace) {
            break;
        }
        let start = at;
        let tag = bytes[at];
        at += 1;
        let digits = bytes[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 10 || bytes.get(at + digits) != Some(&b':') {
            return Err(RequestError::BadLength(start));
        }
        let len: usize = core::str::from_utf8(&bytes[at..at + digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(RequestError::BadLength(start))?;
        at += digits + 1;
        let end = at.checked_add(len).filter(|&e| e <= bytes.len());
        let value = bytes[at..end.ok_or(RequestError::Truncated(start))?].to_vec();
        at += len;
        match tag {
            b'A' => r.argv.push(value),
            b'E' => r.envp.push(value),
            b'C' => r.cwd = Some(value),
            _ => return Err(RequestError::BadTag(start)),
        }
    }
    if r.argv.is_empty() {
        return Err(RequestError::NoProgram);
    }
    Ok(r)
}

/// Encodes a request (the inverse of [`parse`]; for tests and tools).
pub fn encode(r: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |tag: u8, v: &[u8]| {
        out.push(tag);
        out.extend_from_slice(alloc::format!("{}:", v.len()).as_bytes());
        out.extend_from_slice(v);
    };
    for a in &r.argv {
        put(b'A', a);
    }
    for e in &r.envp {
        put(b'E', e);
    }
    if let Some(c) = &r.cwd {
        put(b'C', c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn by_hand() {
        let r = parse(b"A9:/bin/cat\0A3:a bE6:X=1\n:yC4:/tmp\n").unwrap();
        assert_eq!(r.argv, vec![b"/bin/cat\0".to_vec(), b"a b".to_vec()]);
        assert_eq!(r.envp, vec![b"X=1\n:y".to_vec()]);
        assert_eq!(r.cwd, Some(b"/tmp".to_vec()));
        assert_eq!(parse(b""), Err(RequestError::NoProgram));
        assert_eq!(parse(b"E3:X=1"), Err(RequestError::NoProgram));
        assert_eq!(parse(b"A3:ab"), Err(RequestError::Truncated(0)));
        assert_eq!(parse(b"A:ab"), Err(RequestError::BadLength(0)));
        assert_eq!(parse(b"A2ab"), Err(RequestError::BadLength(0)));
        assert_eq!(parse(b"A1:aZ1:b"), Err(RequestError::BadTag(4)));
        assert_eq!(parse(b"A99999999999:a"), Err(RequestError::BadLength(0)));
    }

    proptest! {
        #[test]
        fn round_trips(
            argv in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..6),
            envp in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..6),
            cwd in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        ) {
            let r = Request { argv, envp, cwd };
            prop_assert_eq!(parse(&encode(&r)), Ok(r));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = parse(&bytes);
        }
    }
}
