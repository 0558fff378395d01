//! Adapters of the metadata ports declared in `media::ports`. Only the
//! wiring in `app.rs` names them; the application core sees the traits.

#[cfg(test)]
pub mod contract;
pub mod postgres;
pub mod sled;
