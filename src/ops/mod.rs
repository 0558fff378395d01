//! The operator's side: the control-socket client the CLI uses to ask a
//! running server to move or check storage (the work itself is
//! `MediaService::sync` and `MediaService::fsck`).

pub mod control;
