//! The operator's side: the control-socket client the CLI uses to ask a
//! running server to move or check storage (the work itself is
//! `MediaService::sync` and `MediaService::fsck`), and the moderation
//! commands both sides run.

pub mod control;
pub mod media;
pub mod mmr;
pub mod selfcheck;
pub mod synapse;
