//! The key-value protocol and the clients' deterministic workload, shared
//! by `apps/kv` and `apps/kv-client`.
//!
//! Request: `[op, 0 × 7, key: u64, value: u64]` (little endian, 24 bytes).
//! Reply: `[status, 0 × 7, value: u64]`: status 0 ok, 1 not found, 2 full,
//! 3 bad request. Ops: `GET`, `PUT`, `DELETE`, and `SUM` (value =
//! checksum of every pair whose key's upper 32 bits equal `key`'s).
//!
//! **Text requests** (for a person or a shell: `kv` in service mode, driven
//! through the POSIX library's `/dev/chan/kv`): a message of one or more
//! lines, each `GET key`, `PUT key value`, `DEL key` or `SUM key` (words
//! separated by spaces or tabs, numbers in decimal, a final newline
//! optional, empty lines skipped), answered by one message with one line
//! per request: `OK`, `OK value` (for `GET` and `SUM`), `NOTFOUND`, `FULL`
//! or `BAD` (a malformed line). A message is text when its first byte is
//! an ASCII letter; binary requests are 24 bytes starting with a small op
//! code, so the two never meet.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

/// Read a key.
pub const GET: u8 = 1;
/// Write a key.
pub const PUT: u8 = 2;
/// Remove a key.
pub const DELETE: u8 = 3;
/// Checksum of one client's key space.
pub const SUM: u8 = 4;

/// Reply statuses.
pub const OK: u8 = 0;
/// The key is absent.
pub const NOT_FOUND: u8 = 1;
/// The table is full.
pub const FULL: u8 = 2;
/// Malformed request.
pub const BAD: u8 = 3;

/// Operations per client in the workload.
pub const OPS: u64 = 600;
/// Keys per client.
pub const KEYS: u64 = 40;

/// Encodes a request.
pub fn request(op: u8, key: u64, value: u64) -> [u8; 24] {
    let mut r = [0u8; 24];
    r[0] = op;
    r[8..16].copy_from_slice(&key.to_le_bytes());
    r[16..24].copy_from_slice(&value.to_le_bytes());
    r
}

/// Decodes a request.
pub fn parse_request(b: &[u8]) -> Option<(u8, u64, u64)> {
    if b.len() != 24 {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    Some((b[0], word(8), word(16)))
}

/// Encodes a reply.
pub fn reply(status: u8, value: u64) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[0] = status;
    r[8..16].copy_from_slice(&value.to_le_bytes());
    r
}

/// Decodes a reply.
pub fn parse_reply(b: &[u8]) -> Option<(u8, u64)> {
    if b.len() != 16 {
        return None;
    }
    Some((b[0], u64::from_le_bytes(b[8..16].try_into().unwrap_or([0; 8]))))
}

/// Whether `msg` is a text request (see the crate documentation).
pub fn is_text(msg: &[u8]) -> bool {
    msg.first().is_some_and(u8::is_ascii_alphabetic)
}

/// The requests of a text message, one per non-empty line: `Some((op, key,
/// value))`, or `None` for a malformed line.
pub fn text_requests(msg: &[u8]) -> impl Iterator<Item = Option<(u8, u64, u64)>> + '_ {
    msg.split(|&b| b == b'\n').filter(|l| l.iter().any(|b| !b.is_ascii_whitespace())).map(|line| {
        let mut words = line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
        let op = match words.next()? {
            b"GET" => GET,
            b"PUT" => PUT,
            b"DEL" => DELETE,
            b"SUM" => SUM,
            _ => return None,
        };
        let number = |w: Option<&[u8]>| -> Option<u64> {
            let w = w?;
            if w.is_empty() || !w.iter().all(u8::is_ascii_digit) {
                return None;
            }
            w.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        };
        let key = number(words.next())?;
        let value = if op == PUT { number(words.next())? } else { 0 };
        words.next().is_none().then_some((op, key, value))
    })
}

/// Appends the text reply line to a request `op` answered with `(status,
/// value)` (`op` 0: a malformed line) to `out`; returns the bytes written,
/// or `None` if `out` has no room (the line is then not written).
pub fn text_reply(op: u8, status: u8, value: u64, out: &mut [u8]) -> Option<usize> {
    let mut line = [0u8; 32];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        line[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    match (op, status) {
        (0, _) | (_, BAD) => put(b"BAD"),
        (GET | SUM, OK) => {
            put(b"OK ");
            let mut digits = [0u8; 20];
            let mut i = digits.len();
            let mut v = value;
            loop {
                i -= 1;
                digits[i] = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            put(&digits[i..]);
        }
        (_, OK) => put(b"OK"),
        (_, NOT_FOUND) => put(b"NOTFOUND"),
        (_, FULL) => put(b"FULL"),
        _ => put(b"BAD"),
    }
    put(b"\n");
    let dst = out.get_mut(..n)?;
    dst.copy_from_slice(&line[..n]);
    Some(n)
}

/// The checksum contribution of one pair (order-independent: pairs are
/// summed).
pub fn mix(key: u64, value: u64) -> u64 {
    let mut z = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ value;
    z = (z ^ (z >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^ (z >> 32)
}

/// Operation `i` of client `id`: `(op, key, value)`. Keys live in the
/// client's own space (`id << 32 | k`), so the final state does not depend
/// on how clients interleave.
pub fn op(id: u64, i: u64) -> (u8, u64, u64) {
    let k = (i * 7 + id) % KEYS;
    let key = id << 32 | k;
    match i % 5 {
        0..=2 => (PUT, key, i * 1000 + id),
        3 => (GET, key, 0),
        _ => (DELETE, key, 0),
    }
}

/// Replays client `id`'s workload on a model map (one slot per key) and
/// returns the checksum of its final pairs, and the model (for checking
/// GET replies as they come).
pub fn expected(id: u64) -> u64 {
    let mut model = [None::<u64>; KEYS as usize];
    for i in 0..OPS {
        let (op, key, value) = op(id, i);
        let slot = &mut model[(key & 0xffff_ffff) as usize];
        match op {
            PUT => *slot = Some(value),
            DELETE => *slot = None,
            _ => {}
        }
    }
    let mut sum = 0u64;
    for (k, v) in model.iter().enumerate() {
        if let Some(v) = v {
            sum = sum.wrapping_add(mix(id << 32 | k as u64, *v));
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        assert_eq!(parse_request(&request(PUT, 7 << 32 | 3, 42)), Some((PUT, 7 << 32 | 3, 42)));
        assert_eq!(parse_reply(&reply(NOT_FOUND, 9)), Some((NOT_FOUND, 9)));
        assert_eq!(parse_request(&[0; 23]), None);
        assert_eq!(parse_reply(&[0; 17]), None);
    }

    #[test]
    fn text_requests_parse_and_malformed_lines_are_none() {
        let msg = b"PUT 7 42\nGET 7\n\n  DEL\t7 \nSUM 0\nGET\nPUT 1\nGET x\nNOPE 1\nGET 1 2\nGET 18446744073709551616";
        let got: std::vec::Vec<_> = text_requests(msg).collect();
        assert_eq!(
            got,
            [
                Some((PUT, 7, 42)),
                Some((GET, 7, 0)),
                Some((DELETE, 7, 0)),
                Some((SUM, 0, 0)),
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
        assert!(is_text(b"GET 1") && !is_text(&request(GET, 1, 0)) && !is_text(b""));
    }

    #[test]
    fn text_replies() {
        let mut out = [0u8; 64];
        let mut at = 0;
        for (op, status, value) in [
            (GET, OK, 42),
            (PUT, OK, 0),
            (DELETE, NOT_FOUND, 0),
            (PUT, FULL, 0),
            (0, OK, 0),
            (SUM, OK, u64::MAX),
        ] {
            at += text_reply(op, status, value, &mut out[at..]).unwrap();
        }
        assert_eq!(&out[..at], b"OK 42\nOK\nNOTFOUND\nFULL\nBAD\nOK 18446744073709551615\n");
        assert_eq!(text_reply(GET, OK, 1, &mut [0u8; 4]), None);
    }

    #[test]
    fn workload_stays_in_the_clients_key_space() {
        for id in [1, 2, 9] {
            for i in 0..OPS {
                let (_, key, _) = op(id, i);
                assert_eq!(key >> 32, id);
                assert!(key & 0xffff_ffff < KEYS);
            }
            assert_eq!(expected(id), expected(id));
        }
    }
}
