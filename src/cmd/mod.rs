//! Subcommands.

pub mod replica;
pub mod run;
