//! Frames: `u32 length | u32 header_len | header (JSON) | body (bytes)`, big-endian.
//!
//! The length is checked against the cap before a single byte of payload is allocated or read.
//! [`decode`] works on a byte slice (the fuzz target); [`FrameReader`] reads from an async
//! stream; [`encode`] builds a frame.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest `length` field (everything after the length word), in bytes.
pub const MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;
/// Largest JSON header, in bytes.
pub const MAX_HEADER_BYTES: u32 = 1024 * 1024;
/// Smallest header: `{}`.
const MIN_HEADER_BYTES: u32 = 2;

/// The caps one connection enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest `length`.
    pub max_frame_bytes: u32,
    /// Largest `header_len`.
    pub max_header_bytes: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: MAX_FRAME_BYTES,
            max_header_bytes: MAX_HEADER_BYTES,
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The JSON header, not yet parsed.
    pub header: Vec<u8>,
    /// The binary body (may be empty).
    pub body: Vec<u8>,
}

/// Why a frame was rejected.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// `length` exceeds the cap (checked before allocation).
    #[error("frame: length {length} exceeds the cap of {cap} bytes")]
    TooLarge {
        /// The announced length.
        length: u32,
        /// The cap.
        cap: u32,
    },
    /// `header_len` exceeds its cap or the frame.
    #[error(
        "frame: header length {header_len} is invalid for a frame of {length} bytes (cap {cap})"
    )]
    BadHeaderLength {
        /// The announced header length.
        header_len: u32,
        /// The frame length.
        length: u32,
        /// The header cap.
        cap: u32,
    },
    /// The stream ended inside a frame.
    #[error("frame: stream ended after {got} of {want} bytes")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        want: usize,
    },
    /// The stream failed.
    #[error("frame: {0}")]
    Io(#[from] std::io::Error),
}

fn check(length: u32, header_len: u32, limits: &FrameLimits) -> Result<(), FrameError> {
    if length > limits.max_frame_bytes {
        return Err(FrameError::TooLarge {
            length,
            cap: limits.max_frame_bytes,
        });
    }
    let fits = header_len <= limits.max_header_bytes && header_len <= length.saturating_sub(4);
    if length < 4 + MIN_HEADER_BYTES || header_len < MIN_HEADER_BYTES || !fits {
        return Err(FrameError::BadHeaderLength {
            header_len,
            length,
            cap: limits.max_header_bytes,
        });
    }
    Ok(())
}

/// Decodes one frame from the front of `bytes`; returns it and the bytes consumed.
pub fn decode(bytes: &[u8], limits: &FrameLimits) -> Result<(Frame, usize), FrameError> {
    let word = |at: usize| -> Result<u32, FrameError> {
        let raw = bytes.get(at..at + 4).ok_or(FrameError::Truncated {
            got: bytes.len(),
            want: at + 4,
        })?;
        Ok(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
    };
    let length = word(0)?;
    if length > limits.max_frame_bytes {
        return Err(FrameError::TooLarge {
            length,
            cap: limits.max_frame_bytes,
        });
    }
    let header_len = word(4)?;
    check(length, header_len, limits)?;
    let end = 4 + length as usize;
    let payload = bytes.get(8..end).ok_or(FrameError::Truncated {
        got: bytes.len(),
        want: end,
    })?;
    let (header, body) = payload.split_at(header_len as usize);
    Ok((
        Frame {
            header: header.to_vec(),
            body: body.to_vec(),
        },
        end,
    ))
}

/// Encodes a frame. Callers keep `header` and `body` within the peer's limits.
pub fn encode(header: &[u8], body: &[u8]) -> Vec<u8> {
    let length = 4 + header.len() + body.len();
    let mut out = Vec::with_capacity(4 + length);
    out.extend_from_slice(&(length as u32).to_be_bytes());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

/// Reads frames from an async byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    limits: FrameLimits,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, limits: FrameLimits) -> Self {
        Self { inner, limits }
    }

    /// The next frame, or `Ok(None)` at a clean end of stream (between frames).
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        let mut word = [0u8; 4];
        match read_full(&mut self.inner, &mut word).await? {
            0 => return Ok(None),
            4 => {}
            got => return Err(FrameError::Truncated { got, want: 4 }),
        }
        let length = u32::from_be_bytes(word);
        if length > self.limits.max_frame_bytes {
            return Err(FrameError::TooLarge {
                length,
                cap: self.limits.max_frame_bytes,
            });
        }
        let got = read_full(&mut self.inner, &mut word).await?;
        if got < 4 {
            return Err(FrameError::Truncated { got, want: 4 });
        }
        let header_len = u32::from_be_bytes(word);
        check(length, header_len, &self.limits)?;
        let mut header = vec![0u8; header_len as usize];
        let got = read_full(&mut self.inner, &mut header).await?;
        if got < header.len() {
            return Err(FrameError::Truncated {
                got,
                want: header.len(),
            });
        }
        // Bounded above by the cap check; filled without first zeroing it.
        let want = (length - 4 - header_len) as usize;
        let mut body = Vec::with_capacity(want);
        let got = (&mut self.inner)
            .take(want as u64)
            .read_to_end(&mut body)
            .await?;
        if got < want {
            return Err(FrameError::Truncated { got, want });
        }
        Ok(Some(Frame { header, body }))
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(length: u32, header_len: u32) -> Vec<u8> {
        let mut v = length.to_be_bytes().to_vec();
        v.extend_from_slice(&header_len.to_be_bytes());
        v
    }

    #[test]
    fn round_trip() {
        let bytes = encode(b"{\"type\":\"shutdown\"}", b"\x00\x01");
        let (frame, used) = decode(&bytes, &FrameLimits::default()).expect("decode");
        assert_eq!(used, bytes.len());
        assert_eq!(frame.header, b"{\"type\":\"shutdown\"}");
        assert_eq!(frame.body, b"\x00\x01");
    }

    #[test]
    fn oversized_length_is_rejected_from_the_prefix_alone() {
        let limits = FrameLimits::default();
        let bytes = (MAX_FRAME_BYTES + 1).to_be_bytes();
        assert!(matches!(
            decode(&bytes, &limits),
            Err(FrameError::TooLarge { .. })
        ));
        let bytes = u32::MAX.to_be_bytes();
        assert!(matches!(
            decode(&bytes, &limits),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn header_length_must_fit() {
        let limits = FrameLimits::default();
        let mut bad = frame_of(10, 7);
        bad.extend_from_slice(&[b'x'; 6]);
        assert!(matches!(
            decode(&bad, &limits),
            Err(FrameError::BadHeaderLength { .. })
        ));
        let bad = frame_of(MAX_FRAME_BYTES, MAX_HEADER_BYTES + 1);
        assert!(matches!(
            decode(&bad, &limits),
            Err(FrameError::BadHeaderLength { .. })
        ));
        let bad = frame_of(5, 1);
        assert!(matches!(
            decode(&bad, &limits),
            Err(FrameError::BadHeaderLength { .. })
        ));
    }

    #[tokio::test]
    async fn reader_rejects_before_allocating_and_accepts_the_cap() {
        let limits = FrameLimits {
            max_frame_bytes: 64,
            max_header_bytes: 32,
        };
        let ok = encode(b"{}", &[7u8; 58]);
        let mut reader = FrameReader::new(&ok[..], limits);
        assert_eq!(
            reader.next().await.expect("ok").expect("frame").body.len(),
            58
        );
        let over = encode(b"{}", &[7u8; 59]);
        let mut reader = FrameReader::new(&over[..8], limits);
        assert!(matches!(
            reader.next().await,
            Err(FrameError::TooLarge { length: 65, .. })
        ));
        let mut reader = FrameReader::new(&ok[..20], limits);
        assert!(matches!(
            reader.next().await,
            Err(FrameError::Truncated { .. })
        ));
        let mut reader = FrameReader::new(&[][..], limits);
        assert!(reader.next().await.expect("eof").is_none());
    }
}
