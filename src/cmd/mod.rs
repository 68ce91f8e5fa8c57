//! Subcommands.

pub mod client;
pub mod deploy;
pub mod inspect;
pub mod proxy;
pub mod replica;
pub mod run;
