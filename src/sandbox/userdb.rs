//! The synthetic user database a sandbox sees at `/etc/passwd` and `/etc/group`.
//!
//! Programs ask who they are (`getpass.getuser()`, `pwd.getpwuid(os.getuid())`, tarfile's
//! owner names) and fail with `KeyError` when the answer is missing. The host's own files list
//! the host's users and are never granted; the sandbox gets these instead: root, its own
//! identity and nobody, nothing else. The sandbox user's home is `/nonexistent`, as `HOME` is
//! (see [`super::env::FIXED`]): absent, consistently.

/// The uid and gid of `nobody` / `nogroup`, and the sandbox's default identity.
pub const NOBODY: u32 = 65534;
/// The name of a sandbox identity other than nobody.
pub const SANDBOX_NAME: &str = "plugbox";
/// The sandbox user's home directory, also its `HOME`.
pub const HOME: &str = "/nonexistent";
const SHELL: &str = "/usr/sbin/nologin";

fn user_name(uid: u32) -> &'static str {
    if uid == NOBODY {
        "nobody"
    } else {
        SANDBOX_NAME
    }
}

fn group_name(gid: u32) -> &'static str {
    if gid == NOBODY {
        "nogroup"
    } else {
        SANDBOX_NAME
    }
}

/// `/etc/passwd` for a sandbox running as `uid`:`gid`.
pub fn passwd(uid: u32, gid: u32) -> String {
    let mut out = format!("root:x:0:0:root:/root:{SHELL}\n");
    if uid != 0 {
        let name = user_name(uid);
        out.push_str(&format!("{name}:x:{uid}:{gid}:{name}:{HOME}:{SHELL}\n"));
    }
    if uid != NOBODY {
        out.push_str(&format!(
            "nobody:x:{NOBODY}:{NOBODY}:nobody:{HOME}:{SHELL}\n"
        ));
    }
    out
}

/// `/etc/group` for a sandbox running with primary group `gid`.
pub fn group(gid: u32) -> String {
    let mut out = String::from("root:x:0:\n");
    if gid != 0 {
        out.push_str(&format!("{}:x:{gid}:\n", group_name(gid)));
    }
    if gid != NOBODY {
        out.push_str(&format!("nogroup:x:{NOBODY}:\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_sees_root_and_itself() {
        assert_eq!(
            passwd(NOBODY, NOBODY),
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(group(NOBODY), "root:x:0:\nnogroup:x:65534:\n");
    }

    #[test]
    fn a_pool_uid_gets_its_own_entry_and_nobody() {
        assert_eq!(
            passwd(70001, 70001),
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\
             plugbox:x:70001:70001:plugbox:/nonexistent:/usr/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(
            group(70001),
            "root:x:0:\nplugbox:x:70001:\nnogroup:x:65534:\n"
        );
    }
}
