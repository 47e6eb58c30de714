//! Lower-case hex, the one encoding the agent uses for digests, ids and wrapped keys in its files.

use std::fmt::Write as _;

pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `None` for an odd length or a character that is not a hex digit (either case).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        assert_eq!(encode(&[0, 255, 16]), "00ff10");
        assert_eq!(decode(&encode(&[0, 255, 16])).unwrap(), vec![0, 255, 16]);
        assert_eq!(decode("00FF10").unwrap(), vec![0, 255, 16]);
        assert!(decode("abc").is_none());
        assert!(decode("zz").is_none());
        assert!(decode("+1").is_none(), "from_str_radix accepts a sign; hex must not");
        assert!(decode("é0").is_none());
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
    }
}
