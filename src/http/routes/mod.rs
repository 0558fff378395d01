//! One file per endpoint family.

pub mod config;
pub mod download;
pub mod health;
pub mod thumbnail;
pub mod upload;
