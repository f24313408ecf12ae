//! The hixbus command's library side: the list of services every runner starts from
//! ([`stack`]). The command itself is `src/main.rs`.

pub mod stack;
