//! `plugbox check PATH [--grant FILE]`: a plugin directory's effective policy in words, or a
//! policy file's validation. Runs no plugin code: the entry file is only compiled, in the
//! strictest sandbox ([`crate::syntax`]).

use plugbox::display::escape;
use plugbox::engine::{default_sdk_dir, sdk_location, BUILTIN_CAPABILITIES, HOST_API_VERSION};
use plugbox::manifest::ceiling::intersect;
use plugbox::manifest::{CeilingMode, EffectiveCapability, Grants, Manifest};
use plugbox::policy::{Policy, ProcessRules};
use std::path::Path;

/// Prints one line of the report with every control or bidi character escaped (the fields
/// that come from the manifest are escaped one by one as well, so none can break a line).
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", plugbox::display::escape_lines(&format!($($arg)*)))
    };
}

pub fn check(path: &Path, grant: Option<&Path>, store: Option<&Path>) -> Result<(), String> {
    if path.is_file() {
        let policy = Policy::load(path).map_err(|e| e.to_string())?;
        say!("policy {} is valid", escape(&path.display().to_string()));
        describe_policy(&policy);
        return Ok(());
    }
    let mut manifest = Manifest::load_for_host(path).map_err(|e| e.to_string())?;
    let grants = match grant {
        Some(g) => Grants::load(g).map_err(|e| e.to_string())?,
        None => Grants::all_requested(),
    };
    let effective = manifest.effective(&grants).map_err(|e| e.to_string())?;
    say!(
        "plugin    {} {} (api {}; host {HOST_API_VERSION}: compatible)",
        escape(&manifest.name),
        escape(&manifest.version.to_string()),
        escape(&manifest.api.to_string())
    );
    if let Some(description) = &manifest.file.plugin.description {
        say!("about     {}", escape(description));
    }
    let entry = manifest.entry.display().to_string();
    say!("entry     {}", escape(&entry));
    let relative = manifest.file.plugin.entry.clone();
    if let Some(error) = crate::syntax::check_entry(&manifest.entry, &relative)? {
        return Err(format!("entry {}: {}", escape(&entry), escape(&error)));
    }
    say!("syntax    the entry file compiles (not run)");
    crate::signatures::print(&manifest.entry, &relative);
    let digest =
        plugbox::manifest::digest::code_digest(&manifest.dir).map_err(|e| e.to_string())?;
    say!("digest    {digest} (pin it with code_digest in a grant file)");
    grants
        .check_digest(&manifest.name, &digest)
        .map_err(|e| e.to_string())?;
    say!("runtime   {}", escape(&manifest.runtime));
    let store = store.map_or_else(plugbox::pyenv::store::default_root, Path::to_owned);
    let environment = plugbox::install::describe::describe(&manifest, &store);
    say!("environment {}", escape(&environment.line()));
    say!(
        "capabilities{}",
        if grant.is_some() {
            " (requested ∩ granted)"
        } else {
            " (all requested; no --grant)"
        }
    );
    describe_capabilities(&manifest, &effective);
    if grant.is_some() {
        let ceiling = intersect(&manifest.file.policy_file(), &grants);
        crate::check_ceiling::print(&ceiling, &grants);
    }
    // Exits non-zero when the engine would refuse the load.
    manifest
        .constrain(&grants, CeilingMode::Refuse)
        .map_err(|e| e.to_string())?;
    say!(
        "sandbox   {}(plus read of the plugin directory and of the SDK at {})",
        if grant.is_some() { "effective " } else { "" },
        escape(
            &sdk_location(default_sdk_dir().as_deref())
                .display()
                .to_string()
        )
    );
    describe_policy(&manifest.policy);
    Ok(())
}

/// One line per requested capability: granted or not, its roots, bound and reason.
fn describe_capabilities(manifest: &Manifest, effective: &[EffectiveCapability]) {
    for (name, request) in &manifest.requested {
        let eff = effective.iter().find(|e| &e.name == name);
        let state = match eff {
            Some(_) if !BUILTIN_CAPABILITIES.contains(&name.as_str()) => "granted (host-provided)",
            Some(_) => "granted",
            None => "not granted (optional: absent)",
        };
        let mut line = format!("  {:<16} {state}", escape(name));
        if let Some(e) = eff {
            if !e.paths.is_empty() {
                let roots: Vec<_> = e
                    .paths
                    .iter()
                    .map(|p| format!("\"{}\"", escape(p)))
                    .collect();
                line.push_str(&format!(", roots [{}]", roots.join(", ")));
            }
            if let Some(m) = e.max_bytes {
                line.push_str(&format!(", at most {m} bytes"));
            }
        }
        if let Some(reason) = &request.reason {
            line.push_str(&format!(" — {}", escape(reason)));
        }
        say!("{line}");
    }
}

/// The `process` line: subprocesses, zygote, threads and identity.
fn describe_process(pr: &ProcessRules) -> String {
    let identity = if (pr.uid, pr.gid) == (65534, 65534) {
        let whose = if pr.zygote {
            "one uid of its own, shared by all instances"
        } else {
            "a uid of its own per instance"
        };
        format!("under the engine as root: {whose}; otherwise 65534")
    } else {
        format!("runs as uid {} gid {} when started as root", pr.uid, pr.gid)
    };
    let subprocesses = if pr.subprocesses {
        "may start subprocesses"
    } else {
        "no subprocesses"
    };
    let zygote = if pr.zygote {
        ", instances forked from a zygote (sharing its memory layout and uid)"
    } else {
        ""
    };
    format!(
        "{subprocesses}{zygote}, at most {} threads, {identity}",
        pr.max_threads
    )
}

fn describe_policy(p: &Policy) {
    let fs = p.filesystem();
    let list = |v: &Vec<std::path::PathBuf>| {
        if v.is_empty() {
            "nothing".to_owned()
        } else {
            v.iter()
                .map(|p| escape(&p.display().to_string()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    say!(
        "  read      {} (beyond the system library baseline)",
        list(&fs.read)
    );
    say!("  write     {}", list(&fs.write));
    say!(
        "  execute   {} (beyond the interpreter itself)",
        list(&fs.execute)
    );
    let n = p.network();
    if n.any_tcp() {
        say!(
            "  network   TCP connect to ports {:?}, bind ports {:?}; nothing else",
            n.connect_tcp,
            n.bind_tcp
        );
    } else {
        say!("  network   none");
    }
    let pr = p.process();
    say!("  process   {}", describe_process(pr));
    say!(
        "  instances {} at most, {} kept warm",
        pr.instances,
        pr.min_warm
    );
    let groups: Vec<&str> = p.syscall_groups().iter().map(|g| g.name).collect();
    say!(
        "  syscalls  baseline{}",
        if groups.is_empty() {
            String::new()
        } else {
            format!(" + {}", groups.join(", "))
        }
    );
    let l = p.limits();
    say!(
        "  limits    memory {} MiB, cpu {} s, wall {}, {} open files, files up to {} MiB, output {} bytes, fs.write quota {} MiB",
        l.memory_bytes >> 20,
        l.cpu_seconds,
        l.wall_budget()
            .map_or("unlimited".to_owned(), |w| format!("{} s", w.as_secs())),
        l.open_files,
        l.file_size_bytes >> 20,
        l.output_bytes,
        l.fs_quota_bytes >> 20
    );
    say!(
        "  calls     {} per second (burst {}), {} in flight, {} MiB of pending replies, {} ms timeout",
        l.calls_per_second,
        l.call_burst,
        l.calls_in_flight,
        l.pending_reply_bytes >> 20,
        l.call_timeout.as_millis()
    );
    let s = p.supervision();
    let restart = match s.restart {
        plugbox::policy::file::RestartMode::Never => "never restarted".to_owned(),
        plugbox::policy::file::RestartMode::OnFailure => format!(
            "restarted on failure after {} ms (doubling to {} ms), at most {} times in {} s, then calls fail fast for {} s",
            s.backoff.as_millis(),
            s.backoff_max.as_millis(),
            s.max_restarts,
            s.restart_window.as_secs(),
            s.circuit_open.as_secs()
        ),
    };
    say!("  restart   {restart}");
    say!(
        "  health    ping every {} ms, {} ms deadline",
        s.health_interval.as_millis(),
        s.health_timeout.as_millis()
    );
    say!("  landlock  requires ABI >= {}", p.min_landlock_abi());
}
