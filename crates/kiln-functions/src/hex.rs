//! Lowercase hex written straight into an Arrow string buffer (no per-row `String`).

/// "000102...ff": two ASCII digits per byte value.
const TABLE: &[u8; 512] = b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\
404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f\
606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f\
808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f\
a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\
c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf\
e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/// Appends the lowercase hex of `bytes` to `out`.
#[inline]
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        let i = usize::from(b) * 2;
        out.extend_from_slice(&TABLE[i..i + 2]);
    }
}

/// The 64 lowercase hex digits of a 32-byte digest, on the stack. Branch-free byte
/// arithmetic (no table lookups) so the compiler vectorizes it: a nibble n becomes
/// `'0' + n`, plus 39 (`'a' - '0' - 10`) when n > 9. This is the hot path of the hash
/// functions; a table-driven loop cost a fifth of their time.
#[inline]
pub fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    #[inline(always)]
    fn digit(n: u8) -> u8 {
        // 9 - n wraps to >= 0xf6 exactly when n > 9, so its top bit is the "letter" flag.
        n + b'0' + (9u8.wrapping_sub(n) >> 7) * 39
    }
    let mut out = [0u8; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = digit(b >> 4);
        pair[1] = digit(b & 15);
    }
    out
}

/// Lowercase hex of `bytes` as a `String` (for fingerprints, not hot paths).
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex32_matches_format() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(std::str::from_utf8(&super::hex32(&bytes)).unwrap(), expected);
    }

    #[test]
    fn matches_format() {
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::to_hex(&all), expected);
    }
}
