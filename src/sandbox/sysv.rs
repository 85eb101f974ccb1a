//! Teardown of System V IPC residue: a plugin whose policy allows `@ipc-sysv` can create
//! shared-memory segments, message queues and semaphore sets that outlive its process tree
//! (holding memory past `memory_mib`) and that the next process of the same uid could open.
//! Once the tree is gone, and before its uid serves anyone else, every object whose owner or
//! creator uid is that uid is removed.
//!
//! The objects are found in `/proc/sysvipc/{shm,msg,sem}` (the host shares the plugins' IPC
//! namespace), read line by line with a bounded line length; columns are located by the
//! header's names.

use crate::sys::{sysv_remove, SysvKind};
use serde::Serialize;
use std::io::{BufRead, BufReader, Read};

/// Longest line of a `/proc/sysvipc` file read (real lines are about 200 bytes).
const MAX_LINE_BYTES: u64 = 4096;
/// Passes over the three files; one suffices when nothing creates objects meanwhile.
const MAX_PASSES: usize = 3;

/// What [`remove_owned_by`] removed, per kind; errors are counted, not fatal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SysvRemoved {
    /// Shared-memory segments.
    pub shm: u32,
    /// Message queues.
    pub msg: u32,
    /// Semaphore sets.
    pub sem: u32,
    /// Objects found but not removed (read or `IPC_RMID` errors).
    pub failed: u32,
}

impl SysvRemoved {
    /// Objects removed in all.
    pub fn total(&self) -> u32 {
        self.shm + self.msg + self.sem
    }
}

/// Removes every System V IPC object whose owner uid or creator uid is `uid`. Call it only
/// when no process of `uid` that should keep its objects is alive.
pub fn remove_owned_by(uid: u32) -> SysvRemoved {
    let mut removed = SysvRemoved::default();
    for _ in 0..MAX_PASSES {
        let before = removed;
        for (kind, path, id_column) in [
            (SysvKind::Shm, "/proc/sysvipc/shm", "shmid"),
            (SysvKind::Msg, "/proc/sysvipc/msg", "msqid"),
            (SysvKind::Sem, "/proc/sysvipc/sem", "semid"),
        ] {
            let ids = match std::fs::File::open(path) {
                Ok(f) => owned_ids(BufReader::new(f), id_column, uid),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e),
            };
            let Ok(ids) = ids else {
                tracing::error!(uid, path, "sysv cleanup: cannot read the object list");
                removed.failed += 1;
                continue;
            };
            for id in ids {
                match sysv_remove(kind, id) {
                    Ok(()) => *count(&mut removed, kind) += 1,
                    // Gone meanwhile: nothing left to remove.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => {
                        tracing::error!(uid, id, ?kind, "sysv cleanup: IPC_RMID: {e}");
                        removed.failed += 1;
                    }
                }
            }
        }
        if removed.total() == before.total() {
            break;
        }
    }
    removed
}

fn count(r: &mut SysvRemoved, kind: SysvKind) -> &mut u32 {
    match kind {
        SysvKind::Shm => &mut r.shm,
        SysvKind::Msg => &mut r.msg,
        SysvKind::Sem => &mut r.sem,
    }
}

/// Ids (column `id_column`) of the objects in one `/proc/sysvipc` listing whose `uid` or
/// `cuid` column is `uid`.
fn owned_ids(mut reader: impl BufRead, id_column: &str, uid: u32) -> std::io::Result<Vec<i32>> {
    let mut line = Vec::new();
    let mut header: Option<[usize; 3]> = None;
    let mut ids = Vec::new();
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(ids);
        }
        if line.last() != Some(&b'\n') && n as u64 == MAX_LINE_BYTES {
            return Err(std::io::Error::other("line too long"));
        }
        let fields: Vec<&[u8]> = line
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty())
            .collect();
        let Some(cols) = header else {
            let at = |name: &str| fields.iter().position(|f| *f == name.as_bytes());
            match (at(id_column), at("uid"), at("cuid")) {
                (Some(i), Some(u), Some(c)) => header = Some([i, u, c]),
                _ => return Err(std::io::Error::other("unexpected header")),
            }
            continue;
        };
        let number =
            |i: usize| -> Option<i64> { std::str::from_utf8(fields.get(i)?).ok()?.parse().ok() };
        let owned = [cols[1], cols[2]]
            .iter()
            .any(|&c| number(c) == Some(i64::from(uid)));
        if let (true, Some(id)) = (owned, number(cols[0]).and_then(|i| i32::try_from(i).ok())) {
            ids.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn finds_objects_by_owner_or_creator() {
        let text = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime\n\
                    12345 7 600 4096 10 10 0 1900000000 1900000000 1900000000 1900000000 0\n\
                    0 8 600 4096 10 10 0 0 0 1900000000 0 0\n\
                    0 9 600 4096 10 10 0 1900000001 0 0 0 0\n";
        let ids = owned_ids(text.as_bytes(), "shmid", 1_900_000_000).unwrap();
        assert_eq!(ids, [7, 8]);
        assert!(owned_ids("nonsense\n".as_bytes(), "shmid", 1).is_err());
        let long = format!("key shmid uid cuid\n{}\n", "1 ".repeat(4000));
        assert!(owned_ids(long.as_bytes(), "shmid", 1).is_err());
    }
}
