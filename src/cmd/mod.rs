//! Subcommands.

pub mod client;
pub mod deploy;
pub mod inspect;
pub mod replica;
pub mod run;
