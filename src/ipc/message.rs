//! The typed messages of protocol version 1 (`docs/protocol.md`), decoded strictly.

use super::frame::{self, Frame};
use super::strict_json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest call id (JSON-safe integers).
pub const MAX_ID: u64 = (1 << 53) - 1;
/// Most commands a plugin may export.
pub const MAX_COMMANDS: usize = 256;

/// Stable error codes, shared with every SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not in the allow-list, or outside a granted scope.
    Denied,
    /// Malformed or unknown.
    Invalid,
    /// Over a size limit.
    TooLarge,
    /// Over a rate or in-flight limit.
    RateLimited,
    /// Did not finish in time.
    Timeout,
    /// Cancelled by the caller.
    Cancelled,
    /// The host's handler failed.
    HostError,
    /// The plugin's command raised.
    PluginError,
    /// The peer broke the protocol.
    Protocol,
    /// The plugin is not running: stopped, failed, or its restart circuit is open. Returned
    /// by the engine's API to callers; no peer sends it.
    Unavailable,
    /// The plugin instance serving the call died without being asked to (a crash, a kill
    /// after a failed health check) while the call was in flight; the message carries its
    /// exit status or signal. Decided by the host only.
    PluginCrashed,
    /// The call, or the instance serving it, was stopped by a limit; the message names it
    /// (`limits.call_timeout_ms`, `limits.wall_seconds`, `limits.cpu_seconds`, ...). Decided
    /// by the host only.
    Limit,
    /// The call's arguments do not match the command's argument schema (sent in the plugin's
    /// `hello`); the message names the field. Decided by the host before the call is sent.
    InvalidArgument,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Denied => "denied",
            ErrorCode::Invalid => "invalid",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::HostError => "host_error",
            ErrorCode::PluginError => "plugin_error",
            ErrorCode::Protocol => "protocol",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::PluginCrashed => "plugin_crashed",
            ErrorCode::Limit => "limit",
            ErrorCode::InvalidArgument => "invalid_argument",
        }
    }
}

/// The error object of `error` and `refuse` messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireError {
    /// The stable code.
    pub code: ErrorCode,
    /// Human text.
    pub message: String,
    /// The plugin's traceback, for `plugin_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// `hello.plugin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginIdentity {
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
}

/// `welcome.limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireLimits {
    /// Largest frame.
    pub max_frame_bytes: u32,
    /// Largest header.
    pub max_header_bytes: u32,
    /// Most outstanding plugin→host calls.
    pub max_in_flight: u32,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// Plugin → host, first.
    Hello {
        /// Highest protocol version the plugin speaks.
        protocol: u32,
        /// Name and version.
        plugin: PluginIdentity,
        /// Exported commands.
        commands: Vec<String>,
        /// Argument and result schemas by command (optional; `docs/authoring.md`), checked
        /// and compiled by [`crate::broker::arg_schema`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schemas: Option<Map<String, Value>>,
    },
    /// Host → plugin: accepted.
    Welcome {
        /// Protocol version in use.
        protocol: u32,
        /// Instance id.
        instance: String,
        /// Effective allow-list.
        capabilities: Vec<String>,
        /// Limits the host enforces.
        limits: WireLimits,
    },
    /// Host → plugin: not accepted; the channel closes.
    Refuse {
        /// Why.
        error: WireError,
    },
    /// A call, either direction.
    Call {
        /// Caller-chosen id.
        id: u64,
        /// Capability or command name.
        method: String,
        /// Keyword arguments.
        args: Map<String, Value>,
        /// Name of the argument carried as the frame body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// The body argument is not in the frame but the `N` bytes of the memfd passed with it
        /// (host → plugin only; `docs/protocol.md` §2.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bulk: Option<u64>,
        /// Plugin → host only: the id of the host→plugin call the plugin is running when it
        /// makes this call. A claim the host accepts only while that call is waiting for the
        /// plugin's reply (`docs/protocol.md` §3.2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<u64>,
    },
    /// A successful reply.
    Result {
        /// The call's id.
        id: u64,
        /// The result (absent when `body` is true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// The result is the frame body.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        body: bool,
        /// The bytes result is not in the frame: host → plugin, the `N` bytes of the memfd
        /// passed with it; plugin → host, the first `N` bytes of the buffer the host gave for
        /// this call (`docs/protocol.md` §2.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bulk: Option<u64>,
    },
    /// A failed reply.
    Error {
        /// The call's id.
        id: u64,
        /// What failed.
        error: WireError,
    },
    /// The caller no longer wants call `id`.
    Cancel {
        /// The call's id.
        id: u64,
    },
    /// Host → plugin: exit.
    Shutdown {},
}

/// A frame ready to send, as its head (length words and header) and its body.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Length words and JSON header.
    pub head: Vec<u8>,
    /// Raw body (may be empty).
    pub body: Vec<u8>,
    /// A memfd the host passes with the head (`SCM_RIGHTS`): a bulk body or result buffer.
    pub fd: Option<std::sync::Arc<std::fs::File>>,
}

impl From<Vec<u8>> for Outgoing {
    fn from(frame: Vec<u8>) -> Self {
        Self {
            head: frame,
            body: Vec::new(),
            fd: None,
        }
    }
}

/// Why a frame's header is not a valid message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not strict JSON.
    #[error("message: header is not strict JSON: {0}")]
    Json(serde_json::Error),
    /// JSON, but not a message of this protocol. `id` is set when the header named one, so
    /// the error can be answered.
    #[error("message: {reason}")]
    Shape {
        /// What is wrong.
        reason: String,
        /// The call id the header carried, if any.
        id: Option<u64>,
    },
}

impl Message {
    /// Decodes a frame's header strictly.
    pub fn decode(header: &[u8]) -> Result<Message, MessageError> {
        let value = strict_json::parse(header).map_err(MessageError::Json)?;
        let id = value.get("id").and_then(Value::as_u64);
        let shape = |reason: String| MessageError::Shape { reason, id };
        let message: Message = serde_json::from_value(value).map_err(|e| shape(e.to_string()))?;
        message.check().map_err(shape)?;
        Ok(message)
    }

    fn check(&self) -> Result<(), String> {
        let id = match self {
            Message::Call {
                id,
                args,
                body,
                bulk,
                cause,
                ..
            } => {
                if let Some(name) = body {
                    if args.contains_key(name) {
                        return Err(format!("body argument {name:?} also appears in args"));
                    }
                }
                check_bulk(*bulk, body.is_some())?;
                if matches!(cause, Some(c) if *c == 0 || *c > MAX_ID) {
                    return Err("cause is outside 1..=2^53-1".into());
                }
                *id
            }
            Message::Result {
                id,
                result,
                body,
                bulk,
            } => {
                if *body && result.is_some() {
                    return Err("a result with a body has no \"result\" field".into());
                }
                check_bulk(*bulk, *body)?;
                *id
            }
            Message::Error { id, .. } | Message::Cancel { id } => *id,
            Message::Hello { commands, .. } if commands.len() > MAX_COMMANDS => {
                return Err(format!("more than {MAX_COMMANDS} commands"));
            }
            _ => return Ok(()),
        };
        if id == 0 || id > MAX_ID {
            return Err(format!("id {id} is outside 1..=2^53-1"));
        }
        Ok(())
    }

    /// Encodes this message as a frame without a body, passing `fd` with it: the memfd of a
    /// `bulk` body, or a result buffer.
    pub fn encode_with_fd(&self, fd: std::fs::File) -> Outgoing {
        let mut out = self.encode_outgoing(Vec::new());
        out.fd = Some(std::sync::Arc::new(fd));
        out
    }

    /// Encodes this message and `body` as one frame.
    pub fn encode(&self, body: &[u8]) -> Vec<u8> {
        // Serialising these types cannot fail: every map key is a string, no float is NaN.
        let header = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        frame::encode(&header, body)
    }

    /// Encodes this message as a frame whose body is moved, not copied: for large payloads.
    pub fn encode_outgoing(&self, body: Vec<u8>) -> Outgoing {
        let header = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        let length = 4 + header.len() + body.len();
        let mut head = Vec::with_capacity(8 + header.len());
        head.extend_from_slice(&(length as u32).to_be_bytes());
        head.extend_from_slice(&(header.len() as u32).to_be_bytes());
        head.extend_from_slice(&header);
        Outgoing {
            head,
            body,
            fd: None,
        }
    }

    /// Decodes a whole frame (header and body), for fuzzing and tests.
    pub fn from_frame(frame: &Frame) -> Result<Message, MessageError> {
        Message::decode(&frame.header)
    }
}

/// A `bulk` length goes with a body (`body` named or true) and stays within the protocol's cap.
fn check_bulk(bulk: Option<u64>, has_body: bool) -> Result<(), String> {
    match bulk {
        Some(_) if !has_body => Err("\"bulk\" without a body".into()),
        Some(n) if n > super::bulk::MAX_BULK_BYTES => Err(format!(
            "bulk body of {n} bytes exceeds the protocol's {} bytes",
            super::bulk::MAX_BULK_BYTES
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_call() {
        let m = Message::decode(
            br#"{"type":"call","id":7,"method":"doc.get_text","args":{"doc_id":3}}"#,
        )
        .expect("valid");
        assert!(matches!(m, Message::Call { id: 7, ref method, .. } if method == "doc.get_text"));
    }

    #[test]
    fn duplicate_method_keys_never_decode_in_either_order() {
        for bad in [
            &br#"{"type":"call","id":1,"method":"log","method":"fs.write","args":{}}"#[..],
            br#"{"type":"call","id":1,"method":"fs.write","method":"log","args":{}}"#,
            br#"{"type":"call","type":"result","id":1,"method":"log","args":{}}"#,
        ] {
            assert!(matches!(Message::decode(bad), Err(MessageError::Json(_))));
        }
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_rejected_with_the_id() {
        let e = Message::decode(br#"{"type":"call","id":4,"method":"log","args":{},"admin":true}"#)
            .expect_err("unknown field");
        assert!(
            matches!(e, MessageError::Shape { id: Some(4), .. }),
            "{e:?}"
        );
        let e =
            Message::decode(br#"{"type":"call","id":5,"method":7,"args":{}}"#).expect_err("type");
        assert!(
            matches!(e, MessageError::Shape { id: Some(5), .. }),
            "{e:?}"
        );
        assert!(Message::decode(br#"{"type":"shutdown","x":1}"#).is_err());
        assert!(Message::decode(br#"{"type":"nope"}"#).is_err());
        assert!(Message::decode(br#"{"type":"cancel","id":0}"#).is_err());
        assert!(Message::decode(br#"{"type":"cancel","id":9007199254740992}"#).is_err());
    }

    #[test]
    fn bulk_goes_with_a_body_and_within_the_protocol_cap() {
        let ok =
            br#"{"type":"call","id":1,"method":"m","args":{},"body":"data","bulk":1073741824}"#;
        assert!(matches!(
            Message::decode(ok),
            Ok(Message::Call { bulk: Some(n), .. }) if n == 1 << 30
        ));
        for bad in [
            &br#"{"type":"call","id":2,"method":"m","args":{},"bulk":5}"#[..],
            br#"{"type":"call","id":2,"method":"m","args":{},"body":"d","bulk":1073741825}"#,
            br#"{"type":"result","id":2,"result":1,"bulk":5}"#,
            br#"{"type":"result","id":2,"body":true,"bulk":-1}"#,
        ] {
            let e = Message::decode(bad).expect_err("refused");
            assert!(
                matches!(e, MessageError::Shape { id: Some(2), .. }),
                "{e:?}"
            );
        }
    }

    #[test]
    fn round_trips() {
        let m = Message::Result {
            id: 3,
            result: None,
            body: true,
            bulk: None,
        };
        let bytes = m.encode(b"raw");
        let (f, _) = frame::decode(&bytes, &Default::default()).expect("frame");
        assert_eq!(Message::decode(&f.header).expect("msg"), m);
        assert_eq!(f.body, b"raw");
    }
}
