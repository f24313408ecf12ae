//! Input hygiene for text from clients: what every string a service stores or passes on must
//! satisfy, whatever field it is in.
//!
//! Refused anywhere: C0 control characters other than tab, line feed and carriage return, DEL,
//! C1 controls, and the Unicode bidirectional controls. Control characters corrupt terminals,
//! logs and CSV exports downstream (ESC sequences), NUL truncates strings in C consumers, and
//! bidi overrides make a screen show text in another order than it is stored ("Trojan Source"):
//! a drug name or dose that reads differently than it is must not reach a pharmacist's screen.
//! Every string is also bounded in length, so one field cannot fill a read model.

use serde_json::Value;

/// The default bound for one string in a request.
pub const MAX_STRING_CHARS: usize = 4096;

/// What is wrong with a piece of text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextProblem {
    #[error("contains the control character U+{code:04X} at character {at}")]
    Control { code: u32, at: usize },
    #[error("contains the bidirectional control U+{code:04X} at character {at}")]
    Bidi { code: u32, at: usize },
    #[error("is {chars} characters long; at most {max} are accepted")]
    TooLong { chars: usize, max: usize },
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn is_refused_control(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{7F}'
}

/// Checks one string: no refused characters, at most `max_chars` characters.
pub fn check(text: &str, max_chars: usize) -> Result<(), TextProblem> {
    let mut chars = 0;
    for (at, c) in text.chars().enumerate() {
        if is_refused_control(c) {
            return Err(TextProblem::Control {
                code: u32::from(c),
                at,
            });
        }
        if is_bidi_control(c) {
            return Err(TextProblem::Bidi {
                code: u32::from(c),
                at,
            });
        }
        chars = at + 1;
    }
    if chars > max_chars {
        return Err(TextProblem::TooLong {
            chars,
            max: max_chars,
        });
    }
    Ok(())
}

/// A one-line value (an identifier, a code, a name): also no line breaks or tabs.
pub fn check_line(text: &str, max_chars: usize) -> Result<(), TextProblem> {
    if let Some((at, c)) = text
        .chars()
        .enumerate()
        .find(|(_, c)| matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(TextProblem::Control {
            code: u32::from(c),
            at,
        });
    }
    check(text, max_chars)
}

/// Every string (and object key) in `value` that fails [`check`] with `max_chars`, with its
/// location written from `root` (e.g. `Bundle.entry[3].resource.note[0].text`).
pub fn scan_json(value: &Value, root: &str, max_chars: usize) -> Vec<(String, TextProblem)> {
    let mut problems = Vec::new();
    walk(value, &mut root.to_owned(), max_chars, &mut problems);
    problems
}

fn walk(value: &Value, at: &mut String, max: usize, problems: &mut Vec<(String, TextProblem)>) {
    match value {
        Value::String(s) => {
            if let Err(p) = check(s, max) {
                problems.push((at.clone(), p));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                walk(item, at, max, problems);
                at.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = at.len();
                if let Err(p) = check_line(key, 128) {
                    problems.push((format!("{at} (a key)"), p));
                    continue;
                }
                at.push('.');
                at.push_str(key);
                walk(item, at, max, problems);
                at.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordinary_japanese_text_with_line_breaks_passes() {
        assert!(check("１日３回朝昼夕食後\n眠気に注意\tします", 100).is_ok());
        assert!(check_line("カルボシステイン錠２５０ｍｇ", 100).is_ok());
    }

    #[test]
    fn controls_bidi_overrides_and_long_text_are_refused_with_where() {
        assert_eq!(
            check("ab\0c", 10),
            Err(TextProblem::Control { code: 0, at: 2 })
        );
        assert_eq!(
            check("\u{1b}[31m", 10),
            Err(TextProblem::Control { code: 0x1b, at: 0 })
        );
        assert_eq!(
            check("x\u{85}", 10),
            Err(TextProblem::Control { code: 0x85, at: 1 })
        );
        assert_eq!(
            check("5\u{202E}01", 10),
            Err(TextProblem::Bidi {
                code: 0x202E,
                at: 1
            })
        );
        assert_eq!(
            check(&"あ".repeat(11), 10),
            Err(TextProblem::TooLong { chars: 11, max: 10 })
        );
        assert!(check_line("a\nb", 10).is_err());
    }

    #[test]
    fn a_json_scan_names_every_bad_string_by_its_path() {
        let doc = json!({
            "resourceType": "Bundle",
            "entry": [
                {"resource": {"note": [{"text": "ok"}]}},
                {"resource": {"note": [{"text": "bad\u{0007}"}], "id": "x".repeat(20)}}
            ],
            "bad\nkey": 1
        });
        let found = scan_json(&doc, "Bundle", 10);
        let at: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            at,
            [
                "Bundle.entry[1].resource.note[0].text",
                "Bundle.entry[1].resource.id",
                "Bundle (a key)",
            ]
        );
    }
}
