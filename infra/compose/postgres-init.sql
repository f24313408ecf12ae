-- One database per service (and the registry), created once when docker-compose.yml's
-- PostgreSQL starts on an empty volume. Each service migrates its own tables at start. A
-- deployment gives each its own role too (docs/operations.md, "PostgreSQL").
CREATE DATABASE registry;
CREATE DATABASE clinic_gateway;
CREATE DATABASE pharmacy;
CREATE DATABASE lab_gateway;
CREATE DATABASE insurer_feed;
CREATE DATABASE claims;
CREATE DATABASE insurer;
CREATE DATABASE patient;
CREATE DATABASE research;
CREATE DATABASE ops;
