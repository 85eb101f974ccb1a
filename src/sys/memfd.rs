//! Bulk bodies: `memfd_create`, file seals, and a large buffer
//! read straight from a memfd without zeroing it first.
//!
//! Only the host creates memfds; a plugin's seccomp filter refuses `memfd_create` (`@never`).

use super::check;
use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// `F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW`: the size is fixed and no seal can be added or
/// removed. The seals of a result buffer, which the plugin writes.
pub const SEALS_FIXED_SIZE: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
/// [`SEALS_FIXED_SIZE`] plus `F_SEAL_WRITE`: the contents are immutable too. The seals of a
/// body the host sends.
pub const SEALS_IMMUTABLE: libc::c_int = SEALS_FIXED_SIZE | libc::F_SEAL_WRITE;

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL)`: an anonymous
/// shared-memory file that can be sealed and can never be made executable. Kernels before 6.3
/// lack `MFD_NOEXEC_SEAL`: there the file is created without it (its mode still has no
/// execute bit a plugin could use: Landlock grants no execute right on it).
pub fn memfd_create(name: &CStr) -> io::Result<File> {
    const MFD_NOEXEC_SEAL: libc::c_uint = 0x0008;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: `name` is NUL-terminated and outlives the call; the flags are plain integers.
    let mut ret = unsafe { libc::memfd_create(name.as_ptr(), flags | MFD_NOEXEC_SEAL) };
    if ret == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        ret = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    let fd = check(ret.into())?;
    // SAFETY: memfd_create returned a new fd that nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd as RawFd) })
}

/// `fcntl(F_ADD_SEALS, seals)`.
pub fn add_seals(file: &File, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS takes an int argument; the fd is open for the borrow's duration.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    check(ret.into()).map(drop)
}

/// `fcntl(F_GET_SEALS)`: the seals set on `file` (`EINVAL` if it is not a memfd).
pub fn get_seals(file: &File) -> io::Result<libc::c_int> {
    // SAFETY: F_GET_SEALS takes no argument; the fd is open for the borrow's duration.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    check(ret.into()).map(|s| s as libc::c_int)
}

/// Reads exactly `len` bytes from offset 0 of `file` into `out` (cleared first; its capacity
/// reused when large enough, so that a vector already faulted in is filled without a page
/// fault), without zeroing it first. Fails with `UnexpectedEof` if the file holds fewer bytes.
/// (No `MADV_HUGEPAGE` for a new vector: with THP `defrag = madvise`, measured here, its
/// faults stalled in direct compaction for 200-300 ms per 64 MiB.)
pub fn read_into_vec(file: &File, len: usize, mut out: Vec<u8>) -> io::Result<Vec<u8>> {
    out.clear();
    out.reserve_exact(len);
    let spare = out.spare_capacity_mut();
    let mut done = 0usize;
    while done < len {
        let rest = &mut spare[done..len];
        // SAFETY: `rest` is writable memory of `rest.len()` bytes owned by `out` (possibly
        // uninitialised: pread only writes it); the fd is open for the borrow's duration.
        let ret = unsafe {
            libc::pread(
                file.as_raw_fd(),
                rest.as_mut_ptr().cast(),
                rest.len(),
                done as libc::off_t,
            )
        };
        match check(ret as libc::c_long) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // SAFETY: pread initialised the first `len` bytes, all within the capacity.
    unsafe { out.set_len(len) };
    Ok(out)
}
