//! Durability and concurrency: ids survive restarts, and replicas sharing one database never
//! hand out the same id.

use std::collections::{BTreeSet, HashSet};

use hixbus_tests::{Backend, TestRegistry, fresh_database};

fn schema(n: usize) -> String {
    format!(r#"{{"type":"record","name":"R{n}","fields":[{{"name":"f","type":"long"}}]}}"#)
}

async fn survives_a_restart(backend: Backend) {
    let database_url = fresh_database(backend).await;
    let first = TestRegistry::start(&database_url).await;
    first
        .client
        .set_compatibility_level(Some("a-value"), "NONE")
        .await
        .unwrap();
    let a = first.client.register("a-value", &schema(1)).await.unwrap();
    let b = first.client.register("b-value", &schema(2)).await.unwrap();
    let a2 = first.client.register("a-value", &schema(3)).await.unwrap();
    first.stop().await;

    let second = TestRegistry::start(&database_url).await;
    let client = &second.client;
    assert_eq!(
        client.register("a-value", &schema(1)).await.unwrap(),
        a,
        "same id after restart"
    );
    assert_eq!(client.register("b-value", &schema(2)).await.unwrap(), b);
    assert_eq!(client.versions("a-value").await.unwrap(), [1, 2]);
    assert_eq!(
        client.schema_by_id(a2).await.unwrap(),
        schema_text(client, a2).await
    );
    assert_eq!(
        client.compatibility_level(Some("a-value")).await.unwrap(),
        "NONE"
    );
    let next = client.register("c-value", &schema(4)).await.unwrap();
    assert!(
        next > a2,
        "new ids continue after the old ones: {next} > {a2}"
    );
}

async fn schema_text(client: &hixbus_contracts::registry::RegistryClient, id: u32) -> String {
    client.schema_by_id(id).await.unwrap()
}

#[tokio::test]
async fn sqlite_registry_survives_a_restart() {
    survives_a_restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_registry_survives_a_restart() {
    survives_a_restart(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_one_postgres_database_never_share_an_id() {
    let database_url = fresh_database(Backend::Postgres).await;
    let one = TestRegistry::start(&database_url).await;
    let two = TestRegistry::start(&database_url).await;

    // 40 different schemas, alternating replicas, all at once.
    let mut tasks = Vec::new();
    for n in 0..40 {
        let client = if n % 2 == 0 {
            one.client.clone()
        } else {
            two.client.clone()
        };
        tasks.push(tokio::spawn(async move {
            let subject = format!("s{}-value", n % 5);
            client
                .set_compatibility_level(Some(&subject), "NONE")
                .await
                .unwrap();
            (n, client.register(&subject, &schema(n)).await.unwrap())
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().1);
    }
    let distinct: HashSet<u32> = ids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        40,
        "every distinct schema got its own id: {ids:?}"
    );

    // The same schema through both replicas at once: one id, one version.
    let mut same = Vec::new();
    for n in 0..10 {
        let client = if n % 2 == 0 {
            one.client.clone()
        } else {
            two.client.clone()
        };
        same.push(tokio::spawn(async move {
            client.register("same-value", &schema(999)).await.unwrap()
        }));
    }
    let mut same_ids = BTreeSet::new();
    for task in same {
        same_ids.insert(task.await.unwrap());
    }
    assert_eq!(same_ids.len(), 1, "{same_ids:?}");
    assert_eq!(one.client.versions("same-value").await.unwrap(), [1]);
}

/// Two schemas that each extend v1 compatibly but contradict each other (`x` as int, `x` as
/// string), registered at the same moment through two replicas: only one may become v2, since
/// the other is not BACKWARD compatible with it. A registration checked against a stale history
/// must not slip in after the winner.
#[tokio::test]
async fn racing_registrations_are_each_checked_against_the_version_before_them() {
    let database_url = fresh_database(Backend::Postgres).await;
    let one = TestRegistry::start(&database_url).await;
    let two = TestRegistry::start(&database_url).await;
    let extended = |x_type: &str, default: &str| {
        format!(
            r#"{{"type":"record","name":"R","fields":[{{"name":"f","type":"long"}},{{"name":"x","type":"{x_type}","default":{default}}}]}}"#
        )
    };
    let (as_int, as_string) = (extended("int", "0"), extended("string", "\"\""));

    let mut races = Vec::new();
    for n in 0..12 {
        let subject = format!("race{n}-value");
        one.client
            .set_compatibility_level(Some(&subject), "BACKWARD")
            .await
            .unwrap();
        one.client
            .register(&subject, &schema(0).replace("R0", "R"))
            .await
            .unwrap();
        let (a, b) = (one.client.clone(), two.client.clone());
        let (as_int, as_string) = (as_int.clone(), as_string.clone());
        races.push(tokio::spawn(async move {
            let (x_int, x_string) = tokio::join!(
                a.register(&subject, &as_int),
                b.register(&subject, &as_string)
            );
            let versions = a.versions(&subject).await.unwrap();
            (subject, x_int.is_ok(), x_string.is_ok(), versions)
        }));
    }
    for race in races {
        let (subject, int_won, string_won, versions) = race.await.unwrap();
        assert!(
            int_won ^ string_won,
            "{subject}: exactly one of the contradicting schemas is registered (int {int_won}, string {string_won})"
        );
        assert_eq!(versions, [1, 2], "{subject}");
    }
}
