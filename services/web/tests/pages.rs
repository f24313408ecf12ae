//! The consoles' router without a browser: what every answer carries, sign-in, CSRF, roles,
//! and a service behind that does not answer. The browser suite (tests/it/consoles.rs) drives
//! the same pages end to end.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hixbus_access::Directory;
use hixbus_web::session::Sessions;
use hixbus_web::upstream::Upstream;
use hixbus_web::{AppState, app};
use tower::ServiceExt;

const ORGS: &str = r#"
[[organization]]
id = "pharmacy-aozora"
role = "pharmacy"
name = "あおぞら薬局"

[[organization]]
id = "clinic-sakura"
role = "clinic"
name = "さくら内科クリニック"
"#;

struct Console {
    router: axum::Router,
    pharmacy_key: String,
}

fn console() -> Console {
    let mut directory = Directory::from_toml(ORGS).unwrap();
    let pharmacy_key = directory.issue_key("pharmacy-aozora").unwrap();
    // Nothing listens on port 9: every API call fails to connect.
    let nowhere = "http://127.0.0.1:9";
    let state = AppState {
        directory: Arc::new(directory),
        sessions: Sessions::new(Duration::from_secs(60), Duration::from_secs(3600)),
        upstream: Upstream::new(&hixbus_web::Config {
            clinic_gateway_url: nowhere.to_owned(),
            pharmacy_url: nowhere.to_owned(),
            claims_url: nowhere.to_owned(),
            insurer_feed_url: nowhere.to_owned(),
            insurer_url: nowhere.to_owned(),
            ..hixbus_web::Config::default()
        })
        .unwrap(),
        secure: false,
        oidc: None,
        public_url: None,
        stopping: hixbus_service::CancellationToken::new(),
    };
    Console {
        router: app(state),
        pharmacy_key: pharmacy_key.expose().to_owned(),
    }
}

async fn send(
    router: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, Vec<(String, String)>, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(uri);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::empty()).unwrap()
}

fn post(uri: &str, cookie: Option<&str>, form: &str) -> Request<Body> {
    let mut r =
        Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::from(form.to_owned())).unwrap()
}

fn cookie_of(headers: &[(String, String)]) -> String {
    header(headers, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Signs the pharmacy in; its session cookie and CSRF token.
async fn signed_in(c: &Console) -> (String, String) {
    let (_, headers, html) = send(&c.router, get("/signin", None)).await;
    let anonymous = cookie_of(&headers);
    let form = format!(
        "csrf={}&api_key={}",
        encode(&csrf_of(&html)),
        encode(&c.pharmacy_key)
    );
    let (status, headers, _) = send(&c.router, post("/signin", Some(&anonymous), &form)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(header(&headers, "location"), Some("/pharmacy"));
    let session = cookie_of(&headers);
    assert_ne!(session, anonymous, "signing in starts a new session");
    // The token of the new session, from any page with a form.
    let (_, _, html) = send(&c.router, get("/unsupported", Some(&session))).await;
    (session, csrf_of(&html))
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_pages_are_not_cached() {
    let c = console();
    for uri in ["/signin", "/pharmacy", "/nowhere", "/static/app.css"] {
        let (_, headers, _) = send(&c.router, get(uri, None)).await;
        let csp = header(&headers, "content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{uri}"
        );
        assert_eq!(header(&headers, "x-frame-options"), Some("DENY"), "{uri}");
        assert_eq!(
            header(&headers, "x-content-type-options"),
            Some("nosniff"),
            "{uri}"
        );
        assert_eq!(
            header(&headers, "referrer-policy"),
            Some("no-referrer"),
            "{uri}"
        );
    }
    let (_, headers, _) = send(&c.router, get("/signin", None)).await;
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let (status, _, html) = send(&c.router, get("/nowhere", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("<html lang=\"ja\">"));
}

#[tokio::test]
async fn a_wrong_key_a_missing_token_or_no_session_never_signs_in() {
    let c = console();
    let (_, headers, html) = send(&c.router, get("/signin", None)).await;
    let anonymous = cookie_of(&headers);
    let csrf = csrf_of(&html);
    let wrong = format!("csrf={}&api_key=hxb_{}", encode(&csrf), "0".repeat(64));
    let (status, headers, html) = send(&c.router, post("/signin", Some(&anonymous), &wrong)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(header(&headers, "set-cookie").is_none());
    assert!(html.contains("APIキーが正しくない"));
    let huge = format!("csrf={}&api_key={}", encode(&csrf), "k".repeat(10_000));
    let (status, _, _) = send(&c.router, post("/signin", Some(&anonymous), &huge)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let no_token = format!("api_key={}", encode(&c.pharmacy_key));
    let (status, _, _) = send(&c.router, post("/signin", Some(&anonymous), &no_token)).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a sign-in posted from elsewhere"
    );
    let no_session = format!("csrf={}&api_key={}", encode(&csrf), encode(&c.pharmacy_key));
    let (status, _, _) = send(&c.router, post("/signin", None, &no_session)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = send(&c.router, get("/pharmacy", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(header(&headers, "location"), Some("/signin"));
}

#[tokio::test]
async fn forms_need_the_sessions_token_and_consoles_need_the_role() {
    let c = console();
    let (session, csrf) = signed_in(&c).await;
    for (uri, form) in [
        ("/pharmacy/claim", "access_code=123".to_owned()),
        ("/pharmacy/claim", "csrf=forged&access_code=123".to_owned()),
        (
            "/pharmacy/rx/rx-1/dispense",
            "pharmacist_id=p&give_1=1".to_owned(),
        ),
        ("/signout", String::new()),
    ] {
        let (status, _, html) = send(&c.router, post(uri, Some(&session), &form)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri} {form}");
        assert!(html.contains("許可されていません"), "{uri}");
    }
    // A pharmacy's session is refused the clinic console, whatever the page.
    for uri in [
        "/clinic",
        "/clinic/rows",
        "/clinic/results",
        "/clinic/results/live",
        "/clinic/rx/rx-1",
    ] {
        let (status, _, _) = send(&c.router, get(uri, Some(&session))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
    }
    let (status, _, _) = send(
        &c.router,
        post(
            "/clinic/rx/rx-1/cancel",
            Some(&session),
            &format!("csrf={}&reason=x&clinician_id=y", encode(&csrf)),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // With the token, signing out ends the session.
    let (status, headers, _) = send(
        &c.router,
        post(
            "/signout",
            Some(&session),
            &format!("csrf={}", encode(&csrf)),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        header(&headers, "set-cookie")
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _, _) = send(&c.router, get("/pharmacy", Some(&session))).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the ended session is gone");
}

#[tokio::test]
async fn a_service_that_does_not_answer_is_said_plainly_not_a_crash() {
    let c = console();
    let (session, csrf) = signed_in(&c).await;
    let (status, _, html) = send(&c.router, get("/pharmacy", Some(&session))).await;
    assert_eq!(status, StatusCode::OK, "the page itself stands");
    assert!(html.contains("pharmacy service is unavailable"), "{html}");
    let (status, _, _) = send(&c.router, get("/pharmacy/rows", Some(&session))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let (status, _, _) = send(&c.router, get("/pharmacy/live", Some(&session))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let form = format!("csrf={}&access_code=12345678", encode(&csrf));
    let (status, _, html) = send(&c.router, post("/pharmacy/claim", Some(&session), &form)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(html.contains("できませんでした"));
    // A form far over the size bound is refused before it is read.
    let big = format!("csrf={}&access_code={}", encode(&csrf), "1".repeat(200_000));
    let (status, _, _) = send(&c.router, post("/pharmacy/claim", Some(&session), &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn the_portal_needs_a_patients_sign_in_and_a_callback_needs_its_own_sign_in() {
    let c = console();
    for uri in ["/me", "/me/labs", "/me/access", "/me/consents"] {
        let (status, headers, _) = send(&c.router, get(uri, None)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(header(&headers, "location"), Some("/patient"), "{uri}");
    }
    // An organization's session is no patient's.
    let (session, csrf) = signed_in(&c).await;
    let (status, headers, _) = send(&c.router, get("/me", Some(&session))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(header(&headers, "location"), Some("/patient"));
    let revoke = format!("csrf={}", encode(&csrf));
    let (status, _, _) = send(
        &c.router,
        post("/me/consents/c-1/revoke", Some(&session), &revoke),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "no revoking as an organization"
    );
    // Without a provider configured, patients are told so; a callback no sign-in started is
    // refused whatever it carries.
    let (status, _, html) = send(&c.router, get("/patient", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("設定されていません"));
    let (status, _, _) = send(&c.router, get("/patient/signin", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(
        &c.router,
        get(
            "/patient/callback?code=abc&state=xyz",
            Some("hixbus-login=forged"),
        ),
    )
    .await;
    assert!(status.is_client_error(), "{status}");
}
