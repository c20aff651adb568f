//! The key-value protocol and the clients' deterministic workload, shared
//! by `apps/kv` and `apps/kv-client`.
//!
//! Request: `[op, 0 × 7, key: u64, value: u64]` (little endian, 24 bytes).
//! Reply: `[status, 0 × 7, value: u64]`: status 0 ok, 1 not found, 2 full,
//! 3 bad request. Ops: `GET`, `PUT`, `DELETE`, and `SUM` (value =
//! checksum of every pair whose key's upper 32 bits equal `key`'s).

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
