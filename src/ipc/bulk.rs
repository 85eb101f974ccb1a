//! Bulk bodies: a body larger than [`BULK_THRESHOLD`] does not travel through the socket but
//! in a memfd the host creates and passes with `SCM_RIGHTS` (`docs/protocol.md` §2.1).
//!
//! * Host → plugin (a call's body argument, a capability's bytes reply): the host writes the
//!   body into a new memfd, seals it immutable ([`sys::SEALS_IMMUTABLE`]) and passes it with
//!   the frame whose header says `"bulk": N`. The plugin maps it read-only: no copy.
//! * Plugin → host (a command's bytes result): the plugin asks for a buffer with the built-in
//!   call [`BUFFER_METHOD`]; the host checks the length against its limit, creates a memfd of
//!   exactly that size sealed against resizing ([`sys::SEALS_FIXED_SIZE`]) and passes it. The
//!   plugin writes the result into it and answers `"bulk": N`. The host copies the bytes out
//!   with `pread` (it never maps memory a plugin can write, so nothing it does can fault it).
//!
//! A plugin never passes a descriptor: the broker still refuses any it sends.

use crate::sys;
use std::fs::File;
use std::io;

/// Largest bulk body the protocol carries, bytes (1 GiB).
pub const MAX_BULK_BYTES: u64 = 1 << 30;
/// Bodies larger than this go by memfd; smaller ones in the frame. Up to the frame's cap the
/// socket's copies cost less than a memfd's fresh pages (allocated, zeroed, mapped and freed
/// for every body): `cargo bench --bench bulk` measured a 8 MiB frame round trip 2.5× faster
/// than a memfd just above it. 14 MiB leaves room for the largest header (1 MiB) in a frame.
pub const BULK_THRESHOLD: usize = 14 << 20;
/// The built-in plugin→host call that asks for a result buffer: `args {"call": id, "len": N}`.
pub const BUFFER_METHOD: &str = "plugbox.buffer";

/// Why a bulk body could not be built or taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// The body exceeds the limit; nothing was created or sent.
    #[error("body of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The body's length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The peer's claim does not match the buffer.
    #[error("{0}")]
    Protocol(String),
    /// A system call failed.
    #[error("memfd: {0}")]
    Io(#[from] io::Error),
}

/// The largest body of a host→plugin call, or of its result, for a plugin whose address
/// space is `memory_bytes` (`limits.memory_mib`): the body must fit in it to be mapped.
pub fn body_limit(memory_bytes: u64) -> u64 {
    memory_bytes.min(MAX_BULK_BYTES)
}

/// Checks `len` against `limit` before anything is allocated or sent.
pub fn check_len(len: u64, limit: u64) -> Result<(), BulkError> {
    if len > limit {
        return Err(BulkError::TooLarge { len, limit });
    }
    Ok(())
}

/// A new memfd holding exactly `bytes`, sealed immutable: the plugin can read and map it but
/// never write, resize or unseal it.
pub fn seal_body(bytes: &[u8]) -> Result<File, BulkError> {
    use std::os::unix::fs::FileExt;
    let file = sys::memfd_create(c"plugbox-body")?;
    file.write_all_at(bytes, 0)?;
    sys::add_seals(&file, sys::SEALS_IMMUTABLE)?;
    Ok(file)
}

/// A new memfd of exactly `len` bytes (zeros until written) for a plugin to write a result
/// into, sealed so that nobody can shrink, grow or unseal it.
pub fn result_buffer(len: u64) -> Result<File, BulkError> {
    let file = sys::memfd_create(c"plugbox-result")?;
    file.set_len(len)?;
    sys::add_seals(&file, sys::SEALS_FIXED_SIZE)?;
    Ok(file)
}

/// The first `len` bytes a plugin wrote into `buffer` (which this host created with
/// [`result_buffer`]), read into `into` (reused if large enough): a `protocol` error if the
/// plugin claims more than the buffer holds.
pub fn take_result(buffer: &File, len: u64, into: Vec<u8>) -> Result<Vec<u8>, BulkError> {
    let len = check_result(buffer, len)?;
    Ok(read_result(buffer, len, into)?)
}

/// Checks a plugin's claim of a `len`-byte result in `buffer` (one `fstat`): a `protocol`
/// error past the buffer's sealed size.
pub fn check_result(buffer: &File, len: u64) -> Result<usize, BulkError> {
    let size = buffer.metadata()?.len();
    if len > size {
        return Err(BulkError::Protocol(format!(
            "the plugin claims a result of {len} bytes in a buffer of {size}"
        )));
    }
    usize::try_from(len).map_err(|_| BulkError::TooLarge {
        len,
        limit: MAX_BULK_BYTES,
    })
}

/// Copies the first `len` bytes of `buffer` out (after [`check_result`]): up to a GiB, so
/// callers run it on a blocking thread.
pub fn read_result(buffer: &File, len: usize, into: Vec<u8>) -> io::Result<Vec<u8>> {
    sys::read_into_vec(buffer, len, into)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_sealed_body_cannot_be_written_resized_or_unsealed() {
        let file = seal_body(b"hello").unwrap();
        assert_eq!(file.metadata().unwrap().len(), 5);
        let errno = |e: io::Error| e.raw_os_error();
        assert_eq!(
            errno(file.write_at(b"x", 0).unwrap_err()),
            Some(libc::EPERM)
        );
        assert_eq!(errno((&file).write(b"x").unwrap_err()), Some(libc::EPERM));
        assert_eq!(errno(file.set_len(1).unwrap_err()), Some(libc::EPERM));
        assert_eq!(errno(file.set_len(9).unwrap_err()), Some(libc::EPERM));
        let seals = sys::get_seals(&file).unwrap();
        assert_eq!(seals & sys::SEALS_IMMUTABLE, sys::SEALS_IMMUTABLE);
        assert!(sys::add_seals(&file, libc::F_SEAL_FUTURE_WRITE).is_err());
    }

    #[test]
    fn a_result_buffer_is_writable_but_fixed_in_size() {
        let file = result_buffer(8).unwrap();
        file.write_all_at(b"abc", 0).unwrap();
        assert_eq!(
            file.set_len(4).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(
            file.set_len(16).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(
            file.write_at(b"x", 8).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(take_result(&file, 3, Vec::new()).unwrap(), b"abc");
        let reused = take_result(&file, 8, vec![9; 20]).unwrap();
        assert_eq!(reused, b"abc\0\0\0\0\0");
        assert!(matches!(
            take_result(&file, 9, Vec::new()),
            Err(BulkError::Protocol(_))
        ));
    }

    #[test]
    fn the_limit_is_checked_first() {
        assert!(matches!(
            check_len(MAX_BULK_BYTES + 1, body_limit(u64::MAX)),
            Err(BulkError::TooLarge { .. })
        ));
        assert!(check_len(MAX_BULK_BYTES, body_limit(u64::MAX)).is_ok());
        assert_eq!(body_limit(512 << 20), 512 << 20);
    }
}
