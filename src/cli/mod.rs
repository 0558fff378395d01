//! The command line's subcommands that need more than a few lines.

pub mod media;
