//! Every hixbus service, in one list. `hixbus up` (all in one process), `hixbus serve`
//! (one per process) and the end-to-end tests start services from here, so a new service is
//! one line in [`services!`]'s list (docs/architecture.md, "Adding a service").
//!
//! A service crate offers the same four things: `NAME`, a `Config` (serde, `Default`, unknown
//! keys refused), `build(Config, Deps) -> Result<Service, StartupError>`, and its own
//! `startup`/`routes` behind them.

use std::path::Path;

use hixbus_service::config::{self, Wiring};
use hixbus_service::{Deps, Service, StartupError};

macro_rules! services {
    ($($kind:ident => $krate:ident,)*) => {
        /// A hixbus service.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
        pub enum Kind {
            $($kind,)*
        }

        impl Kind {
            /// Every service, in the order a stack starts them.
            pub const ALL: &[Kind] = &[$(Kind::$kind,)*];

            /// Its name: health answers, logs, `hixbus serve NAME`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kind::$kind => $krate::NAME,)*
                }
            }

            /// Whether it keeps tables (its configuration takes a `database_url`).
            pub fn keeps_tables(self) -> bool {
                match self {
                    $(Kind::$kind => config::has_key::<$krate::Config>("database_url"),)*
                }
            }

            /// The environment variables its configuration reads.
            pub fn env_names(self) -> Vec<String> {
                match self {
                    $(Kind::$kind => config::env_names::<$krate::Config>(),)*
                }
            }

            /// Builds it as deployed: its configuration from `file` and the environment,
            /// connected to what that names, shipping its audit log to the access trail.
            pub async fn deployed(self, file: Option<&Path>) -> Result<Service, StartupError> {
                match self {
                    $(Kind::$kind => {
                        let settings: $krate::Config = config::load(file)?;
                        let wiring: Wiring = config::load_as::<$krate::Config, Wiring>(file)?;
                        let deps = Deps::connect(
                            &format!("hixbus-{}", self.name()),
                            &wiring.bus,
                            wiring.database_url.as_ref(),
                            wiring.organizations.as_deref(),
                        )
                        .await?;
                        let service = $krate::build(settings, deps.clone()).await?;
                        if ships_audit_trail() {
                            service.with_audit_trail(&deps).await
                        } else {
                            Ok(service)
                        }
                    })*
                }
            }

            /// Builds it on a stack's shared bus and directory (`hixbus up`, tests), shipping its
            /// audit log to the access trail as every service does, with the settings the stack
            /// chose (`listen`, `access_code_key`…; a key the service does not have is skipped).
            pub async fn local(
                self,
                settings: &[(&str, &str)],
                deps: Deps,
            ) -> Result<Service, StartupError> {
                match self {
                    $(Kind::$kind => {
                        $krate::build(config::local(settings)?, deps.clone())
                            .await?
                            .with_audit_trail(&deps)
                            .await
                    })*
                }
            }
        }
    };
}

services! {
    ClinicGateway => hixbus_clinic_gateway,
    Pharmacy => hixbus_pharmacy,
    MedicationSafety => hixbus_medication_safety,
    LabGateway => hixbus_lab_gateway,
    InsurerFeed => hixbus_insurer_feed,
    Claims => hixbus_claims,
    Insurer => hixbus_insurer,
    Patient => hixbus_patient,
    Research => hixbus_research,
    Ops => hixbus_ops,
    Web => hixbus_web,
}

/// Whether a deployed service ships its audit log to the patients' trail itself: yes, unless
/// `HIXBUS_AUDIT_TRAIL=off` says the deployment ships the `audit_log` outbox another way (a CDC
/// pipeline). The fault suite sets it: on Tansu's SQLite engine the extra writes slowed the
/// broker enough that a restarted service could not reconnect (docs/operations.md).
fn ships_audit_trail() -> bool {
    match std::env::var("HIXBUS_AUDIT_TRAIL").as_deref() {
        Ok("off") => {
            tracing::warn!(
                "HIXBUS_AUDIT_TRAIL=off: this service does not ship its audit log to the patients' trail; ship the audit_log table another way"
            );
            false
        }
        _ => true,
    }
}

impl Kind {
    /// Whether it talks to Kafka. The consoles only call the other services' HTTP APIs, so
    /// they get no Kafka principal and no grants (`hixbus topics acls`).
    pub fn uses_kafka(self) -> bool {
        self != Kind::Web
    }
}

/// The consumer groups the services run, which the operator console shows the lag of on a
/// cluster that cannot list its groups (librdkafka's mock cluster under `hixbus up`).
pub const CONSUMER_GROUPS: &[&str] = &[
    hixbus_clinic_gateway::GROUP,
    hixbus_clinic_gateway::startup::RESULTS_GROUP,
    hixbus_pharmacy::GROUP,
    hixbus_medication_safety::GROUP,
    hixbus_lab_gateway::GROUP,
    hixbus_insurer_feed::GROUP,
    hixbus_claims::GROUP,
    hixbus_patient::GROUP,
    hixbus_research::GROUP,
];

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_what_serve_takes_and_each_reads_its_own_variables() {
        use clap::ValueEnum;
        for kind in Kind::ALL {
            let value = kind.to_possible_value().unwrap();
            assert_eq!(value.get_name(), kind.name());
            assert!(kind.env_names().contains(&"HIXBUS_LISTEN".to_owned()));
            assert_eq!(
                kind.env_names()
                    .contains(&"HIXBUS_BOOTSTRAP_SERVERS".to_owned()),
                kind.uses_kafka(),
                "{kind}"
            );
        }
        assert!(Kind::Pharmacy.keeps_tables());
        assert!(!Kind::MedicationSafety.keeps_tables());
        assert!(
            !Kind::MedicationSafety
                .env_names()
                .contains(&"HIXBUS_DATABASE_URL".to_owned())
        );
    }
}
