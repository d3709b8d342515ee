//! RFC 4648 base64 decoding for the few places that read it (Basic credentials, Pushgateway
//! `@base64` URL segments): both alphabets, padding optional.

/// Decodes standard or URL-safe base64, with or without padding; `None` when it is not base64.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // A single character left over cannot encode a byte.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn both_alphabets_and_padding() {
        assert_eq!(decode("L3Zhci90bXA"), Some(b"/var/tmp".to_vec()));
        assert_eq!(decode("Zm9vL2Jhcg=="), Some(b"foo/bar".to_vec()));
        assert_eq!(decode("-_8"), decode("+/8"));
        assert_eq!(decode(""), Some(Vec::new()));
        assert_eq!(decode("="), Some(Vec::new()));
        assert_eq!(decode("A"), None);
        assert_eq!(decode("!!"), None);
    }
}
