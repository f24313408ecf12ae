//! The consoles in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `tests/run` installs when missing) driven over WebDriver, against
//! the real services on the real broker. Screenshots of each console are written to
//! `HIXBUS_SCREENS` (`docs/screens` refreshes the README's), else under the target directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hixbus::stack::Kind;
use hixbus_tests::start_service_with;
use serde_json::{Value, json};

use crate::prescriptions::{Flow, fixture};

/// A chromedriver process, killed when dropped.
pub(crate) struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> String {
    if let Ok(path) = std::env::var("HIXBUS_CHROMEDRIVER") {
        return path;
    }
    for candidate in ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    panic!(
        "chromedriver not found: tests/run installs Debian's chromium and chromium-driver \
         (apt-get install chromium chromium-driver), or set HIXBUS_CHROMEDRIVER"
    );
}

impl Driver {
    pub(crate) async fn start() -> Self {
        let port = hixbus_tests::free_port();
        let child = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, url }
    }

    /// A new browser: its own profile, so its own cookies (one person at one screen). Sized
    /// as a tablet held upright.
    pub(crate) async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=820,1180",
            "--lang=ja",
        ];
        if std::env::var("HIXBUS_BROWSER_LOG").is_ok() {
            args.push("--enable-logging=stderr");
        }
        let mut options = json!({ "args": args });
        if let Ok(binary) = std::env::var("HIXBUS_CHROMIUM") {
            options["binary"] = json!(binary);
        }
        caps.insert("goog:chromeOptions".to_owned(), options);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session starts")
    }
}

pub(crate) async fn sign_in(browser: &Client, web: &str, key: &str) {
    browser.goto(&format!("{web}/signin")).await.unwrap();
    let field = browser.find(Locator::Css("#api_key")).await.unwrap();
    field.send_keys(key).await.unwrap();
    click(browser, "form.signin button[type=submit]").await;
    browser
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("form.signout"))
        .await
        .expect("signed in: the page offers sign-out");
}

/// The text of the first element `css` selects (which must be there), read in one step in the
/// page: a live list may replace its rows between two WebDriver calls.
pub(crate) async fn text_of(browser: &Client, css: &str) -> String {
    let text = browser
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            vec![json!(css)],
        )
        .await
        .unwrap();
    text.as_str()
        .unwrap_or_else(|| panic!("nothing matches {css}"))
        .to_owned()
}

/// The confirmation (`.done`) once it says `expected`. A form that posts from a page which
/// already shows a confirmation (revoking, then opting out on the same page) leaves the old one
/// in place until the answer loads, so the text is polled by selector, never through an element
/// the navigation can make stale.
pub(crate) async fn done_saying(browser: &Client, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = browser
            .execute(
                "const e = document.querySelector('.done'); return e ? e.innerText : null;",
                vec![],
            )
            .await
            .ok()
            .and_then(|text| text.as_str().map(str::to_owned));
        match text {
            Some(text) if text.contains(expected) => return,
            text if Instant::now() > deadline => {
                panic!("no confirmation saying {expected:?} in 30 s; the page shows {text:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Does `act` to the element `css` selects, again on a fresh one if a live refresh replaced it
/// in between (once the focus is inside the list, the page holds its refreshes).
pub(crate) async fn on_fresh<F, Fut>(browser: &Client, css: &str, act: F)
where
    F: Fn(fantoccini::elements::Element) -> Fut,
    Fut: Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    for _ in 0..20 {
        let element = wait_for(browser, css).await;
        match act(element).await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                continue;
            }
            Err(e) => panic!("{css}: {e}"),
        }
    }
    panic!("{css} kept being replaced");
}

/// The path the browser is at.
pub(crate) async fn path_of(browser: &Client) -> String {
    browser.current_url().await.unwrap().path().to_owned()
}

pub(crate) async fn h1(browser: &Client) -> String {
    text_of(browser, "h1").await
}

/// Clicks the first element `css` selects.
async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Types `text` into the first element `css` selects.
async fn type_into(browser: &Client, css: &str, text: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(text)
        .await
        .unwrap();
}

pub(crate) async fn wait_for(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
}

pub(crate) async fn screenshot(browser: &Client, name: &str) {
    let dir = std::env::var("HIXBUS_SCREENS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screens"));
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Posts a form the page never offered (no CSRF token) from the page itself, as a forged
/// request would; the page it lands on.
async fn post_without_token(browser: &Client, action: &str, fields: Value) -> String {
    browser
        .execute(
            "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
             for (const [k, v] of Object.entries(arguments[1])) {
               const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i);
             }
             document.body.appendChild(f); f.submit(); return true;",
            vec![json!(action), fields],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for(browser, "h1").await;
    h1(browser).await
}

#[tokio::test]
async fn a_pharmacist_and_a_clinic_work_the_prescription_and_a_critical_result_in_the_browser() {
    let flow = Flow::start().await;
    let (web, web_service) = start_service_with(
        Kind::Web,
        &flow.stack,
        &flow.directory,
        None,
        &[
            ("clinic_gateway_url", flow.gateway.as_str()),
            ("pharmacy_url", flow.pharmacy.as_str()),
        ],
    )
    .await;
    let driver = Driver::start().await;
    let key = |org: &str| flow.keys[org].expose().to_owned();

    // Every page sends the security headers.
    let signin = reqwest::get(format!("{web}/signin")).await.unwrap();
    let csp = signin.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(signin.headers()["x-content-type-options"], "nosniff");
    let cookie = signin.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(signin.text().await.unwrap().contains("<html lang=\"ja\">"));

    // A wrong key is refused and leaves the visitor signed out.
    let pharmacist = driver.browser().await;
    pharmacist.goto(&format!("{web}/signin")).await.unwrap();
    type_into(&pharmacist, "#api_key", "not-a-key").await;
    click(&pharmacist, "form.signin button").await;
    let problem = wait_for(&pharmacist, ".problem")
        .await
        .text()
        .await
        .unwrap();
    assert!(problem.contains("APIキー"), "{problem}");
    pharmacist.goto(&format!("{web}/pharmacy")).await.unwrap();
    assert!(path_of(&pharmacist).await.ends_with("/signin"));

    // The pharmacist signs in and keeps the inbox open.
    sign_in(&pharmacist, &web, &key("pharmacy-aozora")).await;
    assert_eq!(path_of(&pharmacist).await, "/pharmacy");
    wait_for(&pharmacist, "#inbox[data-state=live]").await;
    pharmacist
        .execute("window.__sameDocument = 'yes'; return true;", vec![])
        .await
        .unwrap();

    // A hospital issues a prescription to this pharmacy: it appears without a reload.
    let bundle = fixture("Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json");
    let (status, issued) = flow
        .issue("hospital-daiichi", &bundle, Some("pharmacy-aozora"))
        .await;
    assert_eq!(status, 202, "{issued}");
    let live_id = issued["prescription_id"].as_str().unwrap().to_owned();
    wait_for(&pharmacist, &format!("#inbox tr[data-id='{live_id}']")).await;
    let same = pharmacist
        .execute("return window.__sameDocument || 'reloaded';", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!("yes"), "the row arrived without a reload");
    let announced = text_of(&pharmacist, "#announce").await;
    assert!(announced.contains("新しい処方箋"), "{announced:?}");
    screenshot(&pharmacist, "pharmacy-inbox").await;

    // An open prescription (no pharmacy named): the patient shows its access code at the counter.
    let mut open_bundle = bundle.clone();
    open_bundle["identifier"]["value"] = json!(format!("urn:uuid:{}", uuid::Uuid::new_v4()));
    let (status, open) = flow.issue("hospital-daiichi", &open_bundle, None).await;
    assert_eq!(status, 202, "{open}");
    let open_id = open["prescription_id"].as_str().unwrap().to_owned();
    let code = open["access_code"].as_str().unwrap().to_owned();
    // The pharmacy service must know it first (it travels on the bus).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        pharmacist.goto(&format!("{web}/pharmacy")).await.unwrap();
        let field = pharmacist.find(Locator::Css("#access_code")).await.unwrap();
        field.send_keys(&code).await.unwrap();
        click(&pharmacist, "form.inline button").await;
        wait_for(&pharmacist, "h1").await;
        if path_of(&pharmacist).await.starts_with("/pharmacy/rx/") {
            break;
        }
        let problem = text_of(&pharmacist, ".problem").await;
        assert!(problem.contains("no open prescription"), "{problem}");
        assert!(
            Instant::now() < deadline,
            "the open prescription never arrived"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        path_of(&pharmacist).await,
        format!("/pharmacy/rx/{open_id}")
    );
    let status_text = wait_for(&pharmacist, "#status").await.text().await.unwrap();
    assert_eq!(status_text, "受付済");

    // Dispensing: line 2 allows substitution, and the pharmacist hands over a generic.
    type_into(&pharmacist, "#pharmacist_id", "ph-007").await;
    pharmacist
        .find(Locator::Css("#sub_code_2"))
        .await
        .expect("line 2 offers substitution")
        .send_keys("2149039F1021")
        .await
        .unwrap();
    type_into(&pharmacist, "#sub_name_2", "後発品テスト錠").await;
    assert!(
        pharmacist.find(Locator::Css("#sub_code_1")).await.is_err(),
        "line 1 is 変更不可: no substitution offered"
    );
    screenshot(&pharmacist, "pharmacy-dispense").await;
    click(&pharmacist, "form.dispense button[type=submit]").await;
    done_saying(&pharmacist, "調剤を記録しました").await;
    assert_eq!(text_of(&pharmacist, "#status").await, "調剤済");
    let dispensed = text_of(&pharmacist, "ul.dispensed").await;
    assert!(
        dispensed.contains("後発品テスト錠") && dispensed.contains("後発品に変更"),
        "{dispensed}"
    );

    // The clinic, in its own browser, sees it dispensed.
    let clinic = driver.browser().await;
    sign_in(&clinic, &web, &key("hospital-daiichi")).await;
    assert_eq!(path_of(&clinic).await, "/clinic");
    wait_for(
        &clinic,
        &format!("#issued tr[data-id='{open_id}'][data-status='dispensed']"),
    )
    .await;
    screenshot(&clinic, "clinic-prescriptions").await;

    // A laboratory reports a critical potassium for the hospital's patient: it arrives on top,
    // awaiting acknowledgement, and the clinician acknowledges it from the screen.
    clinic.goto(&format!("{web}/clinic/results")).await.unwrap();
    wait_for(&clinic, "#results[data-state=live]").await;
    let mut report = hixbus_contracts::samples::lab_result_reported("patient:console-1");
    report.envelope.event_id = uuid::Uuid::now_v7().to_string();
    report.report_id = hixbus_tests::unique("lab-console");
    report.ordering = Some(hixbus_contracts::InstitutionRef {
        org_id: "hospital-daiichi".to_owned(),
        institution_code: Some("1311234567".to_owned()),
        name: Some("第一病院".to_owned()),
    });
    report.results[0].interpretation = hixbus_contracts::Interpretation::CriticallyHigh;
    flow.stack.publisher().publish(&report).await.unwrap();
    wait_for(&clinic, "#results tr.awaiting").await;
    let row_text = text_of(&clinic, "#results tr.awaiting").await;
    assert!(row_text.contains("至急"), "{row_text}");
    screenshot(&clinic, "clinic-results").await;
    on_fresh(
        &clinic,
        "#results tr.awaiting input[name=clinician_id]",
        |e| async move { e.send_keys("D001").await },
    )
    .await;
    on_fresh(&clinic, "#results tr.awaiting button", |e| async move {
        e.click().await.map(|_| ())
    })
    .await;
    done_saying(&clinic, "確認を記録しました").await;
    assert!(
        clinic
            .find(Locator::Css("#results tr.awaiting"))
            .await
            .is_err(),
        "nothing awaits acknowledgement any more"
    );
    let acknowledged = text_of(&clinic, "#results .acknowledged").await;
    assert!(acknowledged.contains("D001"), "{acknowledged}");

    // Security: a form without the CSRF token is refused, and nothing happens.
    pharmacist.goto(&format!("{web}/pharmacy")).await.unwrap();
    let refused = post_without_token(
        &pharmacist,
        "/pharmacy/claim",
        json!({ "access_code": code }),
    )
    .await;
    assert_eq!(refused, "許可されていません");
    let forged_cancel = post_without_token(
        &clinic,
        &format!("/clinic/rx/{live_id}/cancel"),
        json!({ "reason": "forged", "clinician_id": "x" }),
    )
    .await;
    assert_eq!(forged_cancel, "許可されていません");
    let (_, still) = flow
        .call(
            Some("hospital-daiichi"),
            "GET",
            format!("{}/clinic/prescriptions/{live_id}", flow.gateway),
            None,
        )
        .await;
    assert_eq!(still["status"], "issued", "the forged cancel did nothing");

    // One organization's session cannot open another's console or records.
    pharmacist.goto(&format!("{web}/clinic")).await.unwrap();
    assert_eq!(h1(&pharmacist).await, "許可されていません");
    pharmacist
        .goto(&format!("{web}/clinic/results"))
        .await
        .unwrap();
    assert_eq!(h1(&pharmacist).await, "許可されていません");
    clinic.goto(&format!("{web}/pharmacy")).await.unwrap();
    assert_eq!(h1(&clinic).await, "許可されていません");
    clinic
        .goto(&format!("{web}/pharmacy/rx/{open_id}"))
        .await
        .unwrap();
    assert_eq!(h1(&clinic).await, "許可されていません");
    let other_pharmacy = driver.browser().await;
    sign_in(&other_pharmacy, &web, &key("pharmacy-midori")).await;
    other_pharmacy
        .goto(&format!("{web}/pharmacy/rx/{open_id}"))
        .await
        .unwrap();
    let problem = wait_for(&other_pharmacy, ".problem")
        .await
        .text()
        .await
        .unwrap();
    assert!(problem.contains("in your inbox"), "{problem}");
    assert!(
        other_pharmacy
            .find(Locator::Css(&format!("#inbox tr[data-id='{open_id}']")))
            .await
            .is_err()
    );
    other_pharmacy
        .goto(&format!("{web}/pharmacy"))
        .await
        .unwrap();
    wait_for(&other_pharmacy, "#inbox").await;
    let other_inbox = text_of(&other_pharmacy, "#inbox").await;
    assert!(
        !other_inbox.contains(&open_id) && !other_inbox.contains(&live_id),
        "{other_inbox}"
    );

    // Signing out ends the session: its pages send the browser back to sign in.
    pharmacist.goto(&format!("{web}/pharmacy")).await.unwrap();
    click(&pharmacist, "form.signout button").await;
    wait_for(&pharmacist, "#api_key").await;
    pharmacist.goto(&format!("{web}/pharmacy")).await.unwrap();
    assert!(path_of(&pharmacist).await.ends_with("/signin"));

    // English on request.
    clinic.goto(&format!("{web}/lang/en")).await.unwrap();
    wait_for(&clinic, "h1").await;
    assert_eq!(h1(&clinic).await, "Prescriptions issued");

    for browser in [pharmacist, clinic, other_pharmacy] {
        browser.close().await.unwrap();
    }
    drop(driver);
    web_service.stop().await;
    flow.stop().await;
}

#[tokio::test]
async fn an_operator_watches_the_exchange_and_redrives_a_dead_letter_in_the_browser() {
    let flow = Flow::start().await;
    let ops_db = hixbus_tests::fresh_database(hixbus_tests::Backend::Postgres).await;
    let checks = format!("pharmacy={},clinic-gateway={}", flow.pharmacy, flow.gateway);
    let (ops, _ops_service) = start_service_with(
        Kind::Ops,
        &flow.stack,
        &flow.directory,
        Some(&ops_db),
        &[
            ("sample_secs", "1"),
            ("groups", "hixbus-pharmacy"),
            ("health_checks", checks.as_str()),
        ],
    )
    .await;
    let (web, _web_service) = start_service_with(
        Kind::Web,
        &flow.stack,
        &flow.directory,
        None,
        &[
            ("pharmacy_url", flow.pharmacy.as_str()),
            ("ops_url", ops.as_str()),
        ],
    )
    .await;
    let key = |org: &str| flow.keys[org].expose().to_owned();

    // A record no consumer can read reaches the prescriptions topic: the pharmacy and the
    // medication-safety check each dead-letter it, with the cause.
    let patient = format!("patient:poison-{}", uuid::Uuid::new_v4());
    let publisher = hixbus_bus::Publisher::new(&flow.stack.kafka, flow.stack.codec()).unwrap();
    let poison = publisher
        .send_raw(
            "prescriptions",
            patient.as_bytes(),
            b"not avro at all",
            &vec![],
        )
        .await
        .unwrap();

    let driver = Driver::start().await;
    let operator = driver.browser().await;
    sign_in(&operator, &web, &key("operator-hixbus")).await;
    assert_eq!(path_of(&operator).await, "/operator");
    // The overview refreshes itself: the dead letters show up on the topic without a reload,
    // with the services' health and the pharmacy's group.
    wait_for(&operator, "#topics tr[data-id='prescriptions'] a.badge").await;
    let services = text_of(&operator, "#services").await;
    assert!(
        services.contains("pharmacy") && services.contains("稼働中"),
        "{services}"
    );
    wait_for(&operator, "#groups tr[data-id='hixbus-pharmacy']").await;
    screenshot(&operator, "operator-overview").await;

    click(&operator, "#topics tr[data-id='prescriptions'] a.badge").await;
    wait_for(&operator, "#letters").await;
    let list = text_of(&operator, "#letters").await;
    assert!(list.contains("復号できない"), "{list}");
    assert!(
        list.contains(&format!(
            "prescriptions/{}/{}",
            poison.partition, poison.offset
        )),
        "{list}"
    );
    click(&operator, "#letters tbody tr a").await;
    wait_for(&operator, "#letter").await;
    let letter = text_of(&operator, "#letter").await;
    assert!(
        letter.contains("magic byte") && letter.contains(&patient),
        "{letter}"
    );
    let opened = path_of(&operator).await;

    // A redrive posted without the session's CSRF token is refused, and nothing is redriven.
    let forged = post_without_token(&operator, &format!("{opened}/redrive"), json!({})).await;
    assert_eq!(forged, "許可されていません");
    operator.goto(&format!("{web}{opened}")).await.unwrap();
    assert!(
        text_of(&operator, "#redrive-state")
            .await
            .contains("未処理")
    );

    // The operator redrives it: it goes back to its topic, marked with where it came from.
    click(&operator, "form.redrive button").await;
    wait_for(&operator, ".done").await;
    let state = text_of(&operator, "#redrive-state").await;
    assert!(state.contains("再投入済 → prescriptions/"), "{state}");
    screenshot(&operator, "operator-dead-letter").await;
    let to = state.rsplit("→ ").next().unwrap().trim().to_owned();
    let offset: i64 = to.rsplit('/').next().unwrap().parse().unwrap();
    let mut reader =
        hixbus_bus::reader::TopicReader::open_at(&flow.stack.kafka, "prescriptions", |_| {
            rdkafka::Offset::Offset(offset)
        })
        .unwrap();
    let mut back = None;
    while let Some(record) = reader.next(true).await {
        let record = record.unwrap();
        if record.key.as_deref() == Some(patient.as_bytes()) && record.offset == offset {
            back = Some(record);
        }
    }
    let back = back.expect("the redriven record is on prescriptions");
    assert_eq!(back.payload.as_deref(), Some(&b"not avro at all"[..]));
    let from = hixbus_bus::headers::get(&back.headers, hixbus_bus::dlq::REDRIVEN_FROM).unwrap();
    assert!(
        opened.ends_with(&from.replacen("prescriptions.dlq", "", 1)),
        "{from} {opened}"
    );

    // Twice would hand the consumers the record twice: the second redrive is refused.
    let segments: Vec<&str> = opened.trim_start_matches("/operator/").split('/').collect();
    let again = format!("{ops}/ops/{}/redrive", segments.join("/"));
    let (status, refused) = flow
        .call(Some("operator-hixbus"), "POST", again, None)
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], "already_redriven");

    // What the API is asked is bounded and checked: the exchange's topics only, a page of at
    // most 500 letters a partition, positions that exist.
    for (query, expected) in [
        ("dead-letters?topic=nope", 404),
        ("dead-letters?topic=prescriptions&limit=0", 400),
        ("dead-letters?topic=prescriptions&limit=501", 400),
        ("dead-letters/prescriptions/-1/0", 400),
        ("dead-letters/prescriptions/0/999999", 404),
        ("dead-letters/prescriptions/0/999999/redrive", 404),
    ] {
        let method = if query.ends_with("redrive") {
            "POST"
        } else {
            "GET"
        };
        let (status, body) = flow
            .call(
                Some("operator-hixbus"),
                method,
                format!("{ops}/ops/{query}"),
                None,
            )
            .await;
        assert_eq!(status, expected, "{query}: {body}");
    }

    // Each list, view and redrive of the letter is in the audit log under the operator, with
    // the patient the record is about.
    let audit =
        hixbus_storage::AuditLog::new(hixbus_storage::Database::connect(&ops_db).await.unwrap())
            .await
            .unwrap();
    let trail = audit.for_patient(&patient).await.unwrap();
    for action in ["ops.dlq.list", "ops.dlq.show", "ops.dlq.redrive"] {
        assert!(
            trail
                .iter()
                .any(|e| e.action == action && e.org_id == "operator-hixbus"),
            "{action} audited: {trail:?}"
        );
    }

    // The registry's subjects are on their page.
    operator
        .goto(&format!("{web}/operator/registry"))
        .await
        .unwrap();
    let subjects = text_of(&operator, "#subjects").await;
    let registered = flow.stack.codec().registry().subjects().await.unwrap();
    assert!(!registered.is_empty());
    for subject in &registered {
        assert!(subjects.contains(subject.as_str()), "{subject}: {subjects}");
    }

    // Operators only, in the browser and at the API; and the operator opens no one else's console.
    let pharmacist = driver.browser().await;
    sign_in(&pharmacist, &web, &key("pharmacy-aozora")).await;
    for page in ["/operator", &opened, "/operator/registry"] {
        pharmacist.goto(&format!("{web}{page}")).await.unwrap();
        assert_eq!(h1(&pharmacist).await, "許可されていません", "{page}");
    }
    let (status, _) = flow
        .call(
            Some("pharmacy-aozora"),
            "GET",
            format!("{ops}/ops/overview"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    operator.goto(&format!("{web}/pharmacy")).await.unwrap();
    assert_eq!(h1(&operator).await, "許可されていません");
}
