//! The character set of an HL7 v2 message, found and decoded before anything splits it.
//!
//! MSH-18 names the character set, but it sits in the message it describes: a message in
//! ISO-2022-JP (`ISO IR87`, what SS-MIX2 senders use) switches to JIS X 0208 with `ESC $ B`,
//! and a kanji's two bytes are each in 0x21–0x7E, where `|`, `^`, `~`, `\` and `&` also are.
//! So MSH is scanned as ISO-2022 would read it (delimiters count only in ASCII mode) to find
//! MSH-18; then the whole message is decoded with `encoding_rs`, and only then parsed.

use encoding_rs::Encoding;

/// Why the bytes cannot be read as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharsetProblem {
    #[error("the message does not start with an MSH segment")]
    NoMsh,
    #[error("MSH-18 names a character set hixbus does not read: {0:?}")]
    Unsupported(String),
    #[error("the message is not valid {0}: {1} byte sequence(s) cannot be decoded")]
    Undecodable(&'static str, usize),
}

/// The character set a message declares, by MSH-18 (HL7 table 0211).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// No MSH-18, `ASCII` or `ISO IR6`: ASCII, read as UTF-8 (its superset) so a sender that
    /// sends UTF-8 without declaring it is still read correctly and strictly.
    Ascii,
    /// `UNICODE UTF-8`, `ISO IR192`.
    Utf8,
    /// `ISO IR87` / `ISO IR159` (JIS X 0208 / 0212 through ISO 2022), as SS-MIX2 requires.
    Iso2022Jp,
    /// `8859/1`, `ISO IR100`.
    Latin1,
}

impl Charset {
    fn encoding(self) -> &'static Encoding {
        match self {
            Charset::Ascii | Charset::Utf8 => encoding_rs::UTF_8,
            Charset::Iso2022Jp => encoding_rs::ISO_2022_JP,
            Charset::Latin1 => encoding_rs::WINDOWS_1252,
        }
    }

    /// From MSH-18, which may repeat (`~ISO IR87`: the default set, then ISO IR87 for the rest).
    fn from_msh18(value: &str) -> Result<Self, CharsetProblem> {
        let mut charset = Charset::Ascii;
        for name in value.split('~').map(str::trim).filter(|n| !n.is_empty()) {
            charset = match name.to_ascii_uppercase().as_str() {
                "ASCII" | "ISO IR6" => charset,
                "UNICODE UTF-8" | "UTF-8" | "ISO IR192" => Charset::Utf8,
                "ISO IR87" | "ISO IR159" | "ISO-2022-JP" => Charset::Iso2022Jp,
                "8859/1" | "ISO IR100" => Charset::Latin1,
                _ => return Err(CharsetProblem::Unsupported(name.to_owned())),
            };
        }
        Ok(charset)
    }
}

/// MSH-18 of `bytes`, read as ISO 2022 reads MSH: fields split on the field separator only
/// where the bytes are ASCII.
fn msh18(bytes: &[u8]) -> Result<String, CharsetProblem> {
    if !bytes.starts_with(b"MSH") || bytes.len() < 4 {
        return Err(CharsetProblem::NoMsh);
    }
    let separator = bytes[3];
    let mut field = 2; // MSH-1 is the separator itself; MSH-2 follows it
    let mut ascii = true;
    let mut value = Vec::new();
    let mut i = 4;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0x1B && i + 2 < bytes.len() {
            // ESC $ @ / ESC $ B / ESC $ ( D: two-byte sets; ESC ( B / ESC ( J: one-byte ASCII.
            ascii = bytes[i + 1] == b'(';
            i += if bytes[i + 1] == b'$' && bytes[i + 2] == b'(' {
                4
            } else {
                3
            };
            continue;
        }
        if ascii && (b == b'\r' || b == b'\n') {
            break;
        }
        if ascii && b == separator {
            field += 1;
            if field > 18 {
                break;
            }
        } else if field == 18 {
            value.push(b);
        }
        i += 1;
    }
    Ok(String::from_utf8_lossy(&value).into_owned())
}

/// The message as text: a UTF-8 byte-order mark dropped, MSH-18's character set decoded. A byte
/// sequence the character set does not have is an error, never a replacement character.
pub fn decode(bytes: &[u8]) -> Result<(String, Charset), CharsetProblem> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let charset = Charset::from_msh18(&msh18(bytes)?)?;
    // ISO-2022-JP is 7-bit: a message declaring it that holds no escape sequence but bytes above
    // 0x7F was converted to UTF-8 keeping its MSH-18 (files passed around do this). Read as
    // UTF-8, strictly, it is the same message; anything else is refused below.
    let charset = if charset == Charset::Iso2022Jp
        && !bytes.contains(&0x1B)
        && bytes.iter().any(|b| *b > 0x7F)
        && std::str::from_utf8(bytes).is_ok()
    {
        Charset::Utf8
    } else {
        charset
    };
    let encoding = charset.encoding();
    let (text, malformed) = encoding.decode_without_bom_handling(bytes);
    if malformed {
        let bad = text.matches('\u{FFFD}').count().max(1);
        return Err(CharsetProblem::Undecodable(encoding.name(), bad));
    }
    Ok((text.into_owned(), charset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msh18_is_found_past_kanji_whose_bytes_look_like_delimiters() {
        // "|" inside JIS: 検 is 0x3821, 査 is 0x3A3A; 0x7C ('|') appears in e.g. "|" positions of
        // other kanji. Build an MSH whose facility holds a JIS pair containing '|' (0x7C).
        let mut msh = b"MSH|^~\\&|APP|".to_vec();
        msh.extend_from_slice(b"\x1B$B\x30\x7C\x1B(B"); // a kanji whose second byte is '|'
        msh.extend_from_slice(b"|||20240101||OUL^R22|1|P|2.5||||||~ISO IR87\r");
        assert_eq!(msh18(&msh).unwrap(), "~ISO IR87");
        assert_eq!(
            Charset::from_msh18("~ISO IR87").unwrap(),
            Charset::Iso2022Jp
        );
    }

    #[test]
    fn no_character_set_means_ascii_read_strictly() {
        let (text, charset) = decode(b"MSH|^~\\&|A|B\rPID|1\r").unwrap();
        assert_eq!(charset, Charset::Ascii);
        assert!(text.starts_with("MSH|"));
        let refused = decode(b"MSH|^~\\&|A|\xFF\xFE\r").unwrap_err();
        assert!(matches!(refused, CharsetProblem::Undecodable("UTF-8", _)));
    }

    #[test]
    fn an_unknown_character_set_or_no_msh_is_refused() {
        assert_eq!(
            decode(b"MSH|^~\\&||||||||||||||||EBCDIC\r").unwrap_err(),
            CharsetProblem::Unsupported("EBCDIC".to_owned())
        );
        assert_eq!(decode(b"PID|1\r").unwrap_err(), CharsetProblem::NoMsh);
        assert_eq!(decode(b"").unwrap_err(), CharsetProblem::NoMsh);
    }

    #[test]
    fn a_message_converted_to_utf_8_keeping_iso_ir87_is_read_as_utf_8_and_mixed_bytes_are_refused()
    {
        let utf8 = "MSH|^~\\&||||||||||||||||~ISO IR87\rPID|1||1||患者^太郎\r";
        let (text, charset) = decode(utf8.as_bytes()).unwrap();
        assert_eq!((text.as_str(), charset), (utf8, Charset::Utf8));
        let mut mixed = b"MSH|^~\\&||||||||||||||||~ISO IR87\rPID|1||1||\x1B$B45\x1B(B".to_vec();
        mixed.extend_from_slice("患者".as_bytes());
        assert!(matches!(
            decode(&mixed).unwrap_err(),
            CharsetProblem::Undecodable("ISO-2022-JP", _)
        ));
    }

    #[test]
    fn a_byte_order_mark_is_dropped() {
        let (text, _) = decode(b"\xEF\xBB\xBFMSH|^~\\&|A\r").unwrap();
        assert!(text.starts_with("MSH|"));
    }
}
