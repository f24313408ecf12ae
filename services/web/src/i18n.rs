//! Japanese first, English second. Every text is written in both places it is used
//! (`lang.t("受付", "Inbox")`): with two languages a catalogue file would only put the two
//! halves of one sentence in different files.

use axum::http::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    /// The `lang` cookie, else Japanese.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        match crate::cookies::get(headers, crate::cookies::LANG) {
            Some("en") => Lang::En,
            _ => Lang::Ja,
        }
    }

    pub fn t(self, ja: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Ja => ja,
            Lang::En => en,
        }
    }

    /// The `lang` attribute of a page.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Lang::Ja => Lang::En,
            Lang::En => Lang::Ja,
        }
    }

    /// How the other language names itself, for the switch.
    pub fn own_name(self) -> &'static str {
        match self {
            Lang::Ja => "日本語",
            Lang::En => "English",
        }
    }
}
