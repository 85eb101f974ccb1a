//! IPC: frames, strict JSON and the typed messages of the plugin protocol.
//!
//! The wire format is specified in `docs/protocol.md`.

pub mod bulk;
pub mod frame;
pub mod message;
pub mod strict_json;

pub use frame::{Frame, FrameError, FrameLimits, FrameReader};
pub use message::{ErrorCode, Message, MessageError, WireError};
