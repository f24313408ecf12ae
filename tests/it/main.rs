//! One test binary for all end-to-end tests (one link instead of many).

mod adversarial;
mod bus;
mod checkups;
mod claims;
mod codec;
mod confluent_clients;
mod consoles;
mod gate;
mod hardening;
mod hl7_generated;
mod labs;
mod migrations;
mod operations;
mod patients;
mod prescriptions;
mod registry_api;
mod registry_auth;
mod registry_storage;
mod research;
mod watchdog;

/// Runs each listed scenario once on SQLite and once on PostgreSQL, against a fresh database.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let registry = hixbus_tests::TestRegistry::fresh(hixbus_tests::Backend::Sqlite).await;
                    super::$scenario(&registry).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let registry = hixbus_tests::TestRegistry::fresh(hixbus_tests::Backend::Postgres).await;
                    super::$scenario(&registry).await;
                }
            )+
        }
    };
}
