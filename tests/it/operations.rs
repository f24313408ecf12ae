//! What an operator plugs into their monitoring: each service's `/metrics` during the
//! prescription flow, and the dashboard and alerting rules in infra/ naming only metrics the
//! services serve.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hixbus_tests::{Backend, BusStack};

use crate::prescriptions::{Flow, numbered_bundle};

/// One sample of a scrape: the series' labels and its value.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape: the metric families (`# TYPE` lines) and the samples by series name.
#[derive(Debug, Default)]
struct Scrape {
    families: Vec<String>,
    samples: BTreeMap<String, Vec<Sample>>,
}

impl Scrape {
    /// Parses the OpenMetrics text the services write (label values without `,` or `"`).
    fn parse(text: &str) -> Self {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(family) = line.strip_prefix("# TYPE ") {
                scrape
                    .families
                    .push(family.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            };
            scrape
                .samples
                .entry(name.to_owned())
                .or_default()
                .push(Sample { labels, value });
        }
        scrape
    }

    /// The samples of `name` whose labels include every one of `with`.
    fn find(&self, name: &str, with: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .get(name)
            .into_iter()
            .flatten()
            .filter(|s| {
                with.iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
            })
            .collect()
    }

    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.find(name, with).iter().map(|s| s.value).sum()
    }
}

async fn scrape(http: &reqwest::Client, base: &str) -> Scrape {
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "not a whole exposition");
    Scrape::parse(&text)
}

/// The metric families a PromQL text (a rule file, a dashboard) names.
fn metrics_named_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("hixbus_") || word.starts_with("http_server_"))
        .map(|word| {
            ["_bucket", "_count", "_sum", "_total"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test]
async fn each_service_of_the_prescription_flow_serves_lag_latency_and_dead_letters_to_prometheus() {
    let mut stack = BusStack::start().await;
    // librdkafka reports lag with its statistics: every second here, not every 15 s.
    stack.kafka.statistics_interval = Some(Duration::from_secs(1));
    let flow = Flow::start_with(Backend::Postgres, stack).await;
    let pharmacy = "pharmacy-aozora";
    let stream = flow.inbox_stream(pharmacy).await;
    assert_eq!(stream.status(), 200);
    const ISSUED: usize = 5;
    for n in 0..ISSUED {
        flow.issue_delivered("clinic-sakura", &numbered_bundle(n), pharmacy)
            .await;
    }
    // A record nobody can decode: each service consuming the topic dead-letters it.
    flow.stack
        .publisher()
        .send_raw(
            "prescriptions",
            b"patient-x",
            b"not a Confluent-framed record",
            &vec![],
        )
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let safety_url = flow.safety.as_ref().map(|s| s.url.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let scraped = loop {
        let scraped = scrape(&http, &flow.pharmacy).await;
        let lag_known = !scraped
            .find(
                "hixbus_kafka_consumer_lag",
                &[("group", "hixbus-pharmacy"), ("topic", "prescriptions")],
            )
            .is_empty();
        let dead_lettered = scraped.sum(
            "hixbus_bus_dead_lettered_total",
            &[
                ("group", "hixbus-pharmacy"),
                ("topic", "prescriptions"),
                ("cause_kind", "undecodable"),
            ],
        ) >= 1.0;
        if lag_known && dead_lettered {
            break scraped;
        }
        assert!(
            Instant::now() < deadline,
            "no lag ({lag_known}) or dead letter ({dead_lettered}) on the pharmacy's /metrics"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Consumer-group lag per partition, caught up after the flow: small and never negative.
    for sample in scraped.find(
        "hixbus_kafka_consumer_lag",
        &[("group", "hixbus-pharmacy"), ("topic", "prescriptions")],
    ) {
        assert!(sample.labels.contains_key("partition"), "{sample:?}");
        assert!((0.0..100.0).contains(&sample.value), "{sample:?}");
    }
    // The flow latency: accepted at the gateway → in the pharmacy's inbox, at least once per
    // prescription, each within the test's 30 s wait.
    let delivery = [
        ("group", "hixbus-pharmacy"),
        ("topic", "prescriptions"),
        ("event_type", "PrescriptionIssued"),
    ];
    let count = scraped.sum("hixbus_bus_delivery_latency_seconds_count", &delivery);
    let sum = scraped.sum("hixbus_bus_delivery_latency_seconds_sum", &delivery);
    assert!(count >= ISSUED as f64, "{count} deliveries");
    assert!(
        sum > 0.0 && sum / count < 30.0,
        "mean delivery {}",
        sum / count
    );
    let inf = [delivery.as_slice(), &[("le", "+Inf")]].concat();
    assert_eq!(
        scraped.sum("hixbus_bus_delivery_latency_seconds_bucket", &inf),
        count,
        "the +Inf bucket holds every observation"
    );
    // Publishing, by topic and event type: the gateway's, seen in the same process.
    assert!(
        scraped.sum(
            "hixbus_bus_publish_duration_seconds_count",
            &[
                ("topic", "prescriptions"),
                ("event_type", "PrescriptionIssued")
            ]
        ) >= ISSUED as f64
    );
    assert!(
        scraped.sum(
            "hixbus_bus_handler_errors_total",
            &[("group", "hixbus-pharmacy"), ("kind", "undecodable")]
        ) >= 1.0
    );
    // HTTP by route template (never the path with its ids) and status.
    assert!(
        scraped.sum(
            "http_server_request_duration_seconds_count",
            &[
                ("http_route", "/fhir/Bundle"),
                ("http_request_method", "POST"),
                ("http_response_status_code", "202"),
            ]
        ) >= ISSUED as f64
    );
    assert!(
        scraped.samples["http_server_request_duration_seconds_count"]
            .iter()
            .all(|s| !s.labels["http_route"].contains("rx-")),
        "no route label holds an id"
    );
    assert!(
        scraped.sum(
            "hixbus_http_live_streams",
            &[("http_route", "/pharmacy/inbox/stream")]
        ) >= 1.0,
        "the open inbox stream"
    );
    let pool = |state| {
        scraped.sum(
            "hixbus_db_pool_connections",
            &[("service", "pharmacy"), ("state", state)],
        )
    };
    assert!(pool("max") >= 1.0 && pool("used") <= pool("max"));

    // Every service of the flow answers /metrics (the safety check has no other API).
    for base in [&flow.gateway, &flow.pharmacy, &safety_url] {
        let scraped = scrape(&http, base).await;
        assert!(
            scraped.families.iter().any(|f| f == "hixbus_bus_consumed"),
            "{base}"
        );
    }

    // The dashboard and the alerting rules name only metrics the services serve.
    let served: Vec<String> = scraped.families.clone();
    for file in [
        "infra/grafana/dashboards/hixbus.json",
        "infra/prometheus/alerts.yml",
    ] {
        let text =
            std::fs::read_to_string(format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let named = metrics_named_in(&text);
        assert!(named.len() >= 5, "{file} names {named:?}");
        for metric in named {
            assert!(
                served.contains(&metric),
                "{file} queries {metric}, which no service serves; served: {served:?}"
            );
        }
    }

    drop(stream);
    flow.stop().await;
}

/// docker-compose.yml's Kafka settings for a service (SASL/SCRAM-SHA-512 as its own principal)
/// against a broker that checks SCRAM credentials (Tansu with `--authentication`): topics are
/// created and records written and read with the right password, and a wrong password is
/// refused, not waited on forever. This test failed before librdkafka was built with OpenSSL
/// ("No provider for SASL mechanism SCRAM-SHA-512").
#[tokio::test]
async fn a_service_principal_authenticates_with_scram_and_a_wrong_password_is_refused() {
    use hixbus_bus::reader::{Start, TopicReader};
    use hixbus_bus::{KafkaConfig, Publisher, topics};
    use hixbus_contracts::codec::{Codec, SchemaIdStrategy};
    use hixbus_tests::{Engine, Tansu};

    let mut tansu = Tansu::start(Engine::Sqlite, None);
    tansu.create_scram_user("hixbus-pharmacy", "pharmacy-demo-secret");
    tansu.require_authentication();
    let as_pharmacy = |password: &str| {
        KafkaConfig::new(tansu.bootstrap())
            .with_client_id("hixbus-pharmacy")
            .with_option("security.protocol", "SASL_PLAINTEXT")
            .with_option("sasl.mechanism", "SCRAM-SHA-512")
            .with_option("sasl.username", "hixbus-pharmacy")
            .with_option("sasl.password", password)
    };
    let specs: Vec<_> = topics::specs(topics::EMBEDDED, hixbus_contracts::Catalog::embedded())
        .unwrap()
        .into_iter()
        .filter(|s| s.name == "lab-results")
        .collect();

    let kafka = as_pharmacy("pharmacy-demo-secret");
    topics::create(&kafka, &specs)
        .await
        .expect("created as the principal");
    // No schema is looked up for bytes sent as they are.
    let registry = hixbus_contracts::registry::RegistryClient::new("http://127.0.0.1:9").unwrap();
    let publisher = Publisher::new(
        &kafka,
        std::sync::Arc::new(Codec::new(registry, SchemaIdStrategy::Register)),
    )
    .unwrap();
    publisher
        .send_raw(
            "lab-results",
            b"p-1",
            b"written as hixbus-pharmacy",
            &vec![],
        )
        .await
        .expect("published as the principal");
    let records = TopicReader::open(&kafka, "lab-results", Start::Beginning)
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].payload.as_deref(),
        Some(&b"written as hixbus-pharmacy"[..])
    );

    let refused = tokio::time::timeout(
        Duration::from_secs(90),
        topics::create(&as_pharmacy("not-the-password"), &specs),
    )
    .await
    .expect("a wrong password is answered, not waited on forever");
    // Tansu closes the connection on a failed SCRAM exchange, which librdkafka reports as a
    // transport failure (Apache Kafka answers with an authentication error); either way the
    // client is refused and says so.
    refused.expect_err("a wrong password is refused");
}
