//! `hixbus topics acls`: the Kafka principals and ACLs a cluster needs for hixbus, as a script
//! for Kafka's own tools. librdkafka (and so rdkafka) has no bindings for creating ACLs or SCRAM
//! credentials that the Rust crate exposes, and an operator reviews a script before running it
//! as a super user anyway.
//!
//! Who gets what:
//! - each service its own principal, `hixbus-<service>`: read and write on the exchange's topics
//!   and their dead letters (the services are one trust domain; a principal each makes every
//!   client attributable and revocable on the broker), and its own consumer groups
//!   (`hixbus-<service>…`); the insurer delivery also creates and writes the insurers' topics,
//!   the demo insurer reads them, the research export creates and writes the projects', and
//!   the operator service describes every service's group (their lag);
//! - each insurer organization a principal that reads only its own topics and groups
//!   (`insurer.<id>.`), each researcher organization only its projects' (`research.<project>.`);
//! - other organizations (clinics, pharmacies, labs) reach hixbus over HTTPS with their API keys
//!   and get no Kafka principal.

use hixbus_access::Directory;
use hixbus_bus::topics::TopicSpec;
use hixbus_research::projects::Project;

use hixbus::stack::Kind;

/// The SASL mechanism the principals' credentials are created for.
pub const MECHANISM: &str = "SCRAM-SHA-512";

/// A principal and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    /// Who it is, for the reader of the script.
    pub who: String,
    pub grants: Vec<Grant>,
}

impl Principal {
    /// The variable its password is read from: `KAFKA_PASSWORD_` and the name in upper case,
    /// `-` and `.` as `_`.
    pub fn password_variable(&self) -> String {
        let name: String = self
            .name
            .chars()
            .map(|c| match c {
                '-' | '.' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        format!("KAFKA_PASSWORD_{name}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub operations: &'static [&'static str],
    pub resource: Resource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// Topics by exact name.
    Topics(Vec<String>),
    TopicPrefix(String),
    GroupPrefix(String),
}

fn grant(operations: &'static [&'static str], resource: Resource) -> Grant {
    Grant {
        operations,
        resource,
    }
}

const READ: &[&str] = &["Read", "Describe"];
const READ_WRITE: &[&str] = &["Read", "Write", "Describe"];
const CREATE_WRITE: &[&str] = &["Create", "Read", "Write", "Describe"];
const GROUP: &[&str] = &["Read", "Describe"];
const DESCRIBE: &[&str] = &["Describe"];

/// The principals for `exchange` (the topics file's topics and dead letters), the organizations
/// and the research projects.
pub fn plan(exchange: &[TopicSpec], directory: &Directory, projects: &[Project]) -> Vec<Principal> {
    let topics: Vec<String> = exchange.iter().map(|t| t.name.clone()).collect();
    // `insurer.` from `insurer.<id>.` with an empty id: every insurer's topics.
    let every = |one: String| one.strip_suffix('.').unwrap_or(&one).to_owned();
    let insurers = every(hixbus_contracts::insurer_prefix(""));
    let research = every(hixbus_contracts::research_prefix(""));
    let mut principals: Vec<Principal> = Kind::ALL
        .iter()
        .filter(|kind| kind.uses_kafka())
        .map(|kind| {
            let name = format!("hixbus-{}", kind.name());
            let mut grants = vec![
                grant(READ_WRITE, Resource::Topics(topics.clone())),
                grant(GROUP, Resource::GroupPrefix(name.clone())),
            ];
            match kind {
                Kind::InsurerFeed => {
                    grants.push(grant(CREATE_WRITE, Resource::TopicPrefix(insurers.clone())))
                }
                Kind::Insurer => grants.extend([
                    grant(READ_WRITE, Resource::TopicPrefix(insurers.clone())),
                    grant(GROUP, Resource::GroupPrefix(insurers.clone())),
                ]),
                Kind::Research => {
                    grants.push(grant(CREATE_WRITE, Resource::TopicPrefix(research.clone())))
                }
                // The operator service reports every service's lag: it reads the groups'
                // committed offsets, and joins none of them.
                Kind::Ops => {
                    grants.push(grant(DESCRIBE, Resource::GroupPrefix("hixbus-".to_owned())))
                }
                _ => {}
            }
            Principal {
                name,
                who: format!("the {} service", kind.name()),
                grants,
            }
        })
        .collect();
    let mut organizations: Vec<_> = directory.organizations().collect();
    organizations.sort_by(|a, b| a.id.cmp(&b.id));
    for org in organizations {
        let prefixes: Vec<String> = match org.role.as_str() {
            "insurer" => vec![hixbus_contracts::insurer_prefix(&org.id)],
            "researcher" => projects
                .iter()
                .filter(|p| p.researcher == org.id)
                .map(|p| hixbus_contracts::research_prefix(&p.id))
                .collect(),
            _ => continue,
        };
        let grants = prefixes
            .into_iter()
            .flat_map(|prefix| {
                [
                    grant(READ, Resource::TopicPrefix(prefix.clone())),
                    grant(GROUP, Resource::GroupPrefix(prefix)),
                ]
            })
            .collect();
        principals.push(Principal {
            name: org.id.clone(),
            who: format!("{} ({}, {})", org.id, org.role.as_str(), org.name),
            grants,
        });
    }
    principals
}

/// A POSIX shell script creating each principal's SCRAM credentials and ACLs with Kafka's tools.
pub fn script(principals: &[Principal]) -> String {
    let mut out = String::from(concat!(
        "#!/bin/sh\n",
        "# Kafka principals and ACLs for hixbus, written by `hixbus topics acls` from the topics\n",
        "# file, the organizations file and the research projects. Run it as a super user:\n",
        "#   KAFKA_BIN=/opt/kafka/bin BOOTSTRAP=host:port ADMIN_CONFIG=admin.properties sh THIS\n",
        "# with each principal's password in the variable named beside it. Re-running it is safe:\n",
        "# credentials are replaced and ACLs already present are kept.\n",
        "set -eu\n",
        ": \"${KAFKA_BIN:?}\" \"${BOOTSTRAP:?}\" \"${ADMIN_CONFIG:?}\"\n",
        "scram() {\n",
        "  \"$KAFKA_BIN/kafka-configs.sh\" --bootstrap-server \"$BOOTSTRAP\" --command-config \"$ADMIN_CONFIG\" \\\n",
        "    --alter --entity-type users --entity-name \"$1\" --add-config \"$2=[iterations=8192,password=$3]\"\n",
        "}\n",
        "allow() {\n",
        "  principal=$1\n",
        "  shift\n",
        "  \"$KAFKA_BIN/kafka-acls.sh\" --bootstrap-server \"$BOOTSTRAP\" --command-config \"$ADMIN_CONFIG\" \\\n",
        "    --add --allow-principal \"User:$principal\" \"$@\"\n",
        "}\n",
    ));
    for p in principals {
        out.push_str(&format!("\n# {}: {}\n", p.name, p.who));
        out.push_str(&format!(
            "scram {} {MECHANISM} \"${{{}:?}}\"\n",
            p.name,
            p.password_variable()
        ));
        for g in &p.grants {
            let operations: Vec<String> = g
                .operations
                .iter()
                .map(|o| format!("--operation {o}"))
                .collect();
            let resource = match &g.resource {
                Resource::Topics(topics) => topics
                    .iter()
                    .map(|t| format!("--topic {t}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                Resource::TopicPrefix(prefix) => {
                    format!("--resource-pattern-type prefixed --topic {prefix}")
                }
                Resource::GroupPrefix(prefix) => {
                    format!("--resource-pattern-type prefixed --group {prefix}")
                }
            };
            out.push_str(&format!(
                "allow {} {} {resource}\n",
                p.name,
                operations.join(" ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Vec<Principal> {
        let directory =
            Directory::from_toml(include_str!("../../../infra/organizations.demo.toml")).unwrap();
        let projects = hixbus_research::projects::parse(
            include_str!("../../../infra/research/projects.demo.toml"),
            "projects.demo.toml",
            &directory,
        )
        .unwrap();
        let exchange = hixbus_bus::topics::specs(
            hixbus_bus::topics::EMBEDDED,
            hixbus_contracts::Catalog::embedded(),
        )
        .unwrap();
        plan(&exchange, &directory, &projects)
    }

    #[test]
    fn each_service_and_each_kafka_facing_organization_is_a_principal() {
        let names: Vec<String> = demo().into_iter().map(|p| p.name).collect();
        for kind in Kind::ALL {
            let principal = format!("hixbus-{}", kind.name());
            assert_eq!(names.contains(&principal), kind.uses_kafka(), "{kind}");
        }
        for org in ["insurer-kenpo", "insurer-kokuho", "univ-research"] {
            assert!(names.contains(&org.to_owned()), "{org}: {names:?}");
        }
        // Clinics and pharmacies use HTTPS with their API keys.
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("clinic-") || n.starts_with("pharmacy-"))
        );
    }

    #[test]
    fn an_insurer_reads_only_its_own_topics_and_groups() {
        let kenpo = demo()
            .into_iter()
            .find(|p| p.name == "insurer-kenpo")
            .unwrap();
        assert_eq!(
            kenpo.grants,
            [
                Grant {
                    operations: READ,
                    resource: Resource::TopicPrefix("insurer.insurer-kenpo.".to_owned())
                },
                Grant {
                    operations: GROUP,
                    resource: Resource::GroupPrefix("insurer.insurer-kenpo.".to_owned())
                },
            ]
        );
    }

    #[test]
    fn the_script_creates_every_principal_before_granting_it_anything() {
        let principals = demo();
        let script = script(&principals);
        for p in &principals {
            let created = script
                .find(&format!(
                    "scram {} {MECHANISM} \"${{{}:?}}\"",
                    p.name,
                    p.password_variable()
                ))
                .unwrap_or_else(|| panic!("{} has no credentials", p.name));
            let granted = script.find(&format!("allow {} ", p.name)).unwrap();
            assert!(created < granted, "{}", p.name);
        }
        assert!(
            script.contains("--topic prescriptions --topic prescriptions.dlq"),
            "{script}"
        );
        assert_eq!(
            principals[0].password_variable(),
            "KAFKA_PASSWORD_HIXBUS_CLINIC_GATEWAY"
        );
    }
}
