//! A registry given an organizations directory: everyone authenticates, every organization may
//! read schemas, only the operator may change them. Confluent's clients authenticate with HTTP
//! Basic, so that is tested with schema_registry_converter and Confluent's Python client as well
//! as with our own client.

use std::sync::Arc;

use hixbus_access::{ApiKey, Directory};
use hixbus_contracts::registry::RegistryClient;
use hixbus_schema_registry::RegistryConfig;
use hixbus_tests::{Backend, TestRegistry, call_as, fresh_database, schema_body};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, get_schema_by_id};

const ORGANIZATIONS: &str = r#"
[[organization]]
id = "hixbus-ops"
role = "operator"
name = "hixbus operations"

[[organization]]
id = "pharmacy-aozora"
role = "pharmacy"
name = "あおぞら薬局"
"#;

const SCHEMA: &str = r#"{"type":"record","name":"Guarded","fields":[{"name":"f","type":"long"}]}"#;

async fn guarded() -> (TestRegistry, ApiKey, ApiKey) {
    let mut directory = Directory::from_toml(ORGANIZATIONS).unwrap();
    let operator = directory.issue_key("hixbus-ops").unwrap();
    let pharmacy = directory.issue_key("pharmacy-aozora").unwrap();
    let mut config = RegistryConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        fresh_database(Backend::Sqlite).await,
    );
    config.organizations = Some(Arc::new(directory));
    (TestRegistry::start_with(config).await, operator, pharmacy)
}

/// (status, Confluent error code, WWW-Authenticate) of a raw call.
async fn raw(
    registry: &TestRegistry,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: Option<String>,
) -> (u16, Option<i64>, Option<String>) {
    let url = format!("{}{path}", registry.url);
    let answer = call_as(&url, method, body.as_deref(), authorization.as_deref()).await;
    (answer.status, answer.error_code(), answer.challenge)
}

fn basic(org: &str, key: &ApiKey) -> String {
    use base64::Engine as _;
    let pair = format!("{org}:{}", key.expose());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[tokio::test]
async fn strangers_are_refused_and_only_the_operator_changes_schemas() {
    let (registry, operator, pharmacy) = guarded().await;

    let (status, code, challenge) = raw(&registry, "GET", "/subjects", None, None).await;
    assert_eq!((status, code), (401, Some(40101)));
    assert_eq!(
        challenge.as_deref(),
        Some("Basic realm=\"hixbus-registry\"")
    );
    let (status, _, _) = raw(&registry, "GET", "/health", None, None).await;
    assert_eq!(status, 200, "health checks need no key");
    let wrong = basic("hixbus-ops", &pharmacy);
    let (status, code, _) = raw(&registry, "GET", "/subjects", Some(wrong), None).await;
    assert_eq!(
        (status, code),
        (401, Some(40101)),
        "a key under another organization's name"
    );

    // The pharmacy reads but changes nothing.
    let as_pharmacy = || Some(basic("pharmacy-aozora", &pharmacy));
    let (status, _, _) = raw(&registry, "GET", "/subjects", as_pharmacy(), None).await;
    assert_eq!(status, 200);
    for (method, path, body) in [
        (
            "POST",
            "/subjects/guarded-value/versions",
            Some(schema_body(SCHEMA)),
        ),
        (
            "PUT",
            "/config",
            Some(r#"{"compatibility":"NONE"}"#.to_owned()),
        ),
        ("DELETE", "/subjects/guarded-value", None),
    ] {
        let (status, code, _) = raw(&registry, method, path, as_pharmacy(), body).await;
        assert_eq!((status, code), (403, Some(40301)), "{method} {path}");
    }

    // The operator registers; the pharmacy, through a stock Confluent client, fetches it.
    let ops = RegistryClient::new(&registry.url)
        .unwrap()
        .with_basic_auth("hixbus-ops", operator.expose());
    let id = ops.register("guarded-value", SCHEMA).await.unwrap();
    let settings = SrSettings::new_builder(registry.url.clone())
        .set_basic_authorization("pharmacy-aozora", Some(pharmacy.expose()))
        .build()
        .unwrap();
    let fetched = get_schema_by_id(id, &settings).await.unwrap();
    assert!(fetched.schema.contains("Guarded"), "{}", fetched.schema);
    let anonymous = SrSettings::new(registry.url.clone());
    assert!(get_schema_by_id(id, &anonymous).await.is_err());
    registry.stop().await;
}

/// Confluent's own Python client, configured as its documentation says for a registry behind
/// HTTP Basic (`basic.auth.user.info`), reads from a guarded registry; without it, it is refused.
#[tokio::test]
async fn confluents_python_client_authenticates_with_basic_user_info() {
    let python = std::env::var("HIXBUS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let (registry, operator, pharmacy) = guarded().await;
    let ops = RegistryClient::new(&registry.url)
        .unwrap()
        .with_basic_auth("hixbus-ops", operator.expose());
    let id = ops.register("guarded-value", SCHEMA).await.unwrap();

    const SCRIPT: &str = r#"
import sys
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
url, user_info, schema_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
print(SchemaRegistryClient({"url": url, "basic.auth.user.info": user_info}).get_schema(schema_id).schema_str)
try:
    SchemaRegistryClient({"url": url}).get_schema(schema_id)
    print("anonymous: allowed")
except SchemaRegistryError as e:
    print(f"anonymous: {e.http_status_code} {e.error_code}")
"#;
    let run = tokio::process::Command::new(&python)
        .args(["-c", SCRIPT, &registry.url])
        .arg(format!("pharmacy-aozora:{}", pharmacy.expose()))
        .arg(id.to_string())
        .output()
        .await
        .expect("Confluent's Python client (tests/run installs it; or set HIXBUS_PYTHON)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("Guarded"), "{stdout}");
    assert!(stdout.contains("anonymous: 401 40101"), "{stdout}");
    registry.stop().await;
}

/// Confluent Cloud, and most production registries, are https-only. Our client reaches a
/// registry over TLS, trusting a private CA when it is given one, and refuses a certificate it
/// cannot verify.
#[tokio::test]
async fn our_client_reaches_a_registry_over_tls_and_refuses_an_unverified_one() {
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key.into())
    .unwrap();
    // A TLS terminator in front of the registry, as a load balancer would be.
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = registry.addr;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });

    let url = format!("https://127.0.0.1:{port}");
    let trusting = RegistryClient::new(&url)
        .unwrap()
        .with_root_certificate(certified.cert.pem().as_bytes())
        .unwrap();
    let id = trusting.register("tls-value", SCHEMA).await.unwrap();
    assert!(trusting.schema_by_id(id).await.unwrap().contains("Guarded"));
    let untrusting = RegistryClient::new(&url).unwrap();
    assert!(
        untrusting.register("tls-value", SCHEMA).await.is_err(),
        "a self-signed certificate nobody vouched for is refused"
    );
    registry.stop().await;
}
