//! The two cookies the consoles set: the session id and the language.

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, SameSite};

/// The session cookie's name. With TLS it takes the `__Host-` prefix, which browsers accept
/// only from a secure origin, for the whole host, without a `Domain`: no sibling subdomain can
/// set or shadow it.
pub fn session_name(secure: bool) -> &'static str {
    if secure {
        "__Host-hixbus-session"
    } else {
        "hixbus-session"
    }
}

pub const LANG: &str = "hixbus-lang";

/// The value of cookie `name` in the request, if sent (the first one, as browsers send the
/// most specific first).
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for the session: HttpOnly (no script reads it), SameSite=Strict (no other site's
/// page sends it), Secure with TLS; a session cookie in the browser's sense (gone when the
/// browser closes), the server ending it sooner.
pub fn session(value: &str, secure: bool) -> HeaderValue {
    let cookie = Cookie::build((session_name(secure), value.to_owned()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .build();
    to_header(&cookie)
}

/// `Set-Cookie` that removes the session cookie.
pub fn session_removal(secure: bool) -> HeaderValue {
    let mut cookie = Cookie::build((session_name(secure), ""))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .build();
    cookie.make_removal();
    to_header(&cookie)
}

/// `Set-Cookie` for a sign-in under way at a patient's provider: `SameSite=Lax`, so it comes
/// back with the provider's cross-site redirect to the callback (and only there), for `ttl`
/// (zero removes it).
pub fn login(
    name: &'static str,
    value: &str,
    secure: bool,
    ttl: std::time::Duration,
) -> HeaderValue {
    let cookie = Cookie::build((name, value.to_owned()))
        .path("/patient/callback")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(ttl.as_secs()).unwrap_or(600),
        ))
        .build();
    to_header(&cookie)
}

pub fn lang(value: &'static str, secure: bool) -> HeaderValue {
    let cookie = Cookie::build((LANG, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(cookie::time::Duration::days(365))
        .build();
    to_header(&cookie)
}

fn to_header(cookie: &Cookie<'_>) -> HeaderValue {
    // Built from our own names and base64url or fixed values: always a valid header.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_with_tls() {
        let plain = session("abc", false);
        let plain = plain.to_str().unwrap();
        assert!(plain.starts_with("hixbus-session=abc"));
        assert!(plain.contains("HttpOnly"));
        assert!(plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        let tls = session("abc", true);
        let tls = tls.to_str().unwrap();
        assert!(tls.starts_with("__Host-hixbus-session=abc"));
        assert!(tls.contains("Secure"));
        assert!(tls.contains("Path=/"));
    }

    #[test]
    fn the_named_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hixbus-session=xyz; hixbus-lang=en"),
        );
        assert_eq!(get(&headers, "hixbus-session"), Some("xyz"));
        assert_eq!(get(&headers, LANG), Some("en"));
        assert_eq!(get(&headers, "hixbus"), None);
    }
}
