//! Whether a string needs JSON escaping, eight bytes at a time: the check
//! the compiled path's JSON writer and the JSON log lines run on every
//! string they write, almost all of which need none.

/// The bytes serde_json escapes in a string: controls, `"` and `\\`.
pub static ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Whether `s` holds a byte serde_json escapes ([`ESCAPED`]), eight bytes
/// at a time: a byte below 0x20, `"` or `\\`.
pub fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `w` below `n` (n <= 0x80): exact as a yes/no answer.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let escapes = |word: &[u8]| {
        let w = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        below(w, 0x20) | below(quote, 1) | below(backslash, 1) != 0
    };
    if s.len() < 8 {
        return s.iter().any(|&b| ESCAPED[usize::from(b)]);
    }
    let mut words = s.chunks_exact(8);
    // The last eight bytes cover the remainder (overlapping a word).
    words.any(escapes) || escapes(&s[s.len() - 8..])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn escapes_are_found_eight_bytes_at_a_time(
            bytes in proptest::collection::vec(
                prop_oneof![
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x21,
                    2 => 0x5bu8..0x5e,
                    2 => 0x7fu8..=0xff,
                    40 => Just(b'a'),
                ],
                0..40,
            ),
        ) {
            // Every length around the word size, escapes at every offset.
            let expected = bytes.iter().any(|&b| ESCAPED[usize::from(b)]);
            prop_assert_eq!(needs_escape(&bytes), expected);
        }

    }
}
