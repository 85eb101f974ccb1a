//! The broker: one gate per plugin connection, and the loop that feeds it.

pub mod arg_schema;
pub mod channel;
pub mod coalesce;
pub mod gate;
pub mod histogram;
pub mod methods;
pub mod rate;
pub mod session;
pub mod stats;

pub use session::{EndReason, Session};
