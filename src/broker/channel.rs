//! The host end of the IPC channel as an async byte stream that refuses passed descriptors.
//!
//! Reads use `recvmsg` with room for ancillary data: any `SCM_RIGHTS` descriptors are closed
//! at once and the read fails with [`FdPassed`], which the session treats as a fatal protocol
//! violation.

use crate::sys;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::unix::OwnedReadHalf;

/// The error payload when the peer passed file descriptors.
#[derive(Debug, thiserror::Error)]
#[error("the plugin passed file descriptors over the channel")]
pub struct FdPassed;

/// Is `e` the fd-passing refusal?
pub fn is_fd_passing(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<FdPassed>())
}

/// The read half of the channel.
#[derive(Debug)]
pub struct ChannelReader {
    half: OwnedReadHalf,
}

impl ChannelReader {
    /// Wraps the read half.
    pub fn new(half: OwnedReadHalf) -> Self {
        Self { half }
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = self.half.as_ref();
        loop {
            match stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let fd = stream.as_raw_fd();
            match stream.try_io(Interest::READABLE, || sys::recv_into_read_buf(fd, buf)) {
                Ok(received) if received.passed_fds => {
                    return Poll::Ready(Err(io::Error::other(FdPassed)))
                }
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
