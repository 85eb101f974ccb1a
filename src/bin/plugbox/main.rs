//! The `plugbox` command line: `exec`, `run`, `serve`, `check`, `list`, `install`, `probe`,
//! `schema`, `audit`, `diff`.
//!
//! Exit status: the command's own, or 128+N when it was killed by signal N; 125 when plugbox
//! itself fails (bad policy, unenforceable layer, unreachable interpreter, exec failure), with
//! one line on stderr naming the layer and the cause.

mod audit;
mod audit_follow;
mod audit_keys;
mod audit_summary;
mod check;
mod check_ceiling;
mod exec;
mod forwarded;
mod install;
mod list;
mod paths;
mod run;
mod serve;
mod serve_io;
mod serve_metrics;
mod serve_order;
mod signals;
mod syntax;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use plugbox::policy::{file, syscall_groups};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
enum AuditCmd {
    /// Walk the hash chain (files oldest first): exit 0 intact and sealed, 1 broken.
    Verify {
        /// Log files, in any order: they are verified in chain order, and a live log brings
        /// its rotated archives (`FILE.000001`, ...) along.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
        /// Also check the signed checkpoints with this public key (audit.pub); repeatable.
        #[arg(long = "key", value_name = "PUB")]
        keys: Vec<PathBuf>,
        /// Also check the log against the checkpoints exported to this anchors file.
        #[arg(long, value_name = "FILE")]
        anchors: Option<PathBuf>,
    },
    /// Make a checkpoint signing key: DIR/audit.key (secret, mode 0600) and DIR/audit.pub.
    Keygen {
        /// Directory to write the two files to (created mode 0700 if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print records as a table, or JSON lines for jq.
    Show {
        /// Log files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Only this plugin (manifest name).
        #[arg(long)]
        plugin: Option<String>,
        /// Only this event kind (call, spawn, kill, ...).
        #[arg(long)]
        event: Option<String>,
        /// Only this decision (allow, deny).
        #[arg(long)]
        decision: Option<String>,
        /// Only records at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Print the live log's records, then each one appended to it, until interrupted
        /// (follows the file across rotation; takes one file: the live log).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Counts per plugin, capability and decision, incidents per plugin, and the denied calls
    /// with their rules.
    Summary {
        /// Log files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Exit status for plugbox's own failures.
const EXIT_ENGINE: u8 = 125;

#[derive(Parser)]
#[command(
    name = "plugbox",
    version,
    about = "Run untrusted programs and plugins inside a kernel sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run CMD confined by the policy in FILE.
    Exec {
        /// The policy file (TOML, `schema = 1`).
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// Write the enforcement report (JSON) here.
        #[arg(long, value_name = "FILE")]
        report_json: Option<PathBuf>,
        /// Add KEY=VALUE to the command's clean environment.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        argv: Vec<OsString>,
    },
    /// Print what this kernel supports, and what is missing.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also list the syscall groups a policy can name.
        #[arg(long)]
        groups: bool,
    },
    /// Load a plugin, call its commands in order, print one JSON line per call, shut it down.
    Run {
        /// The plugin directory (holding plugbox.toml).
        dir: PathBuf,
        /// Grant file: the ceiling of every section (default: everything the manifest
        /// requests, for development; said on stderr).
        #[arg(long, value_name = "FILE")]
        grant: Option<PathBuf>,
        /// Drop what the manifest asks beyond the grant (audited) instead of refusing the load.
        #[arg(long)]
        clamp: bool,
        /// Audit log (JSON Lines; a sealed log is appended to). Default: audit.jsonl in
        /// /var/lib/plugbox as root, else in $XDG_STATE_HOME/plugbox or ~/.local/state/plugbox.
        #[arg(long, value_name = "FILE")]
        audit: Option<PathBuf>,
        /// Per-plugin state directory (kv store). Default: `state` beside the default audit log.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// A command to call (repeatable; calls run in order).
        #[arg(long = "call", value_name = "COMMAND")]
        calls: Vec<String>,
        /// JSON object of arguments for the preceding --call.
        #[arg(long = "args", value_name = "JSON")]
        args: Vec<String>,
        /// Operational log format on stderr.
        #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Audit durability: fsync (every record), group (batched fsync, at most 10 ms late), os.
        #[arg(long, value_name = "MODE", default_value = "group")]
        durability: plugbox::audit::Durability,
        /// Print the plugin's counters (calls, denials, errors, latency percentiles) at the end.
        #[arg(long)]
        stats: bool,
        #[command(flatten)]
        signing: audit_keys::SigningArgs,
    },
    /// Run the managed engine for a host in any language: JSON-line requests on stdin (load,
    /// call, reload, unload, stats, shutdown), one JSON-line answer each on stdout.
    Serve {
        /// Audit log (JSON Lines; a sealed log is appended to). Default: audit.jsonl in
        /// /var/lib/plugbox as root, else in $XDG_STATE_HOME/plugbox or ~/.local/state/plugbox.
        #[arg(long, value_name = "FILE")]
        audit: Option<PathBuf>,
        /// Per-plugin state directory (kv store). Default: `state` beside the default audit log.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// Operational log format on stderr.
        #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Audit durability: fsync (every record), group (batched fsync, at most 10 ms late), os.
        #[arg(long, value_name = "MODE", default_value = "group")]
        durability: plugbox::audit::Durability,
        /// A host capability the host answers over the pipes (`host_call` out, `host_reply`
        /// in); repeatable.
        #[arg(long = "capability", value_name = "NAME")]
        capabilities: Vec<String>,
        /// Let a load or reload without "grant" give the plugin everything its manifest asks
        /// (development only); without this flag such a request is refused.
        #[arg(long)]
        allow_ungranted: bool,
        /// Drop what a manifest asks beyond its grant (audited) instead of refusing the load.
        #[arg(long)]
        clamp: bool,
        /// Serve the engine's metrics (Prometheus text) at http://ADDR/metrics; ADDR is a
        /// loopback IP:PORT such as 127.0.0.1:9464 (port 0: any free port, printed on stderr).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        #[command(flatten)]
        signing: audit_keys::SigningArgs,
    },
    /// Build the Python environment a plugin declares ([python] requirements, wheels) into the
    /// content-addressed store, running no package code unconfined; print its path.
    Install {
        /// The plugin directory (holding plugbox.toml).
        dir: PathBuf,
        /// The store (default: /var/cache/plugbox/envs as root, else in the user's cache).
        #[arg(long, value_name = "ROOT")]
        store: Option<PathBuf>,
    },
    /// Read an audit log: verify its chain (and signed checkpoints), show records, summarise
    /// them; make a checkpoint signing key.
    Audit {
        #[command(subcommand)]
        action: AuditCmd,
    },
    /// Validate a plugin directory (its effective policy, in words) or a policy file.
    Check {
        /// A plugin directory or a policy file.
        path: PathBuf,
        /// Grant file to intersect with (plugin directories only).
        #[arg(long, value_name = "FILE")]
        grant: Option<PathBuf>,
        /// The environment store `plugbox install` fills (default: its default).
        #[arg(long, value_name = "ROOT")]
        store: Option<PathBuf>,
    },
    /// List plugins (directories, installed Python distributions, plugbox_plugins.*) without
    /// running any plugin code.
    List {
        /// Directories holding plugin directories (DIR/*/plugbox.toml); repeatable.
        #[arg(long = "path", value_name = "DIR")]
        paths: Vec<PathBuf>,
        /// Interpreter whose site directories are searched (run with -I -S).
        #[arg(long, value_name = "INTERPRETER")]
        python: Option<PathBuf>,
        /// Search these site directories instead of asking an interpreter; repeatable.
        #[arg(long = "site", value_name = "DIR")]
        sites: Vec<PathBuf>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The environment store `plugbox install` fills (default: its default).
        #[arg(long, value_name = "ROOT")]
        store: Option<PathBuf>,
    },
    /// What a new version of a plugin asks for beyond the old one. Exit 0 if it escalates
    /// nothing, 1 if it does.
    Diff {
        /// The old plugin directory.
        old: PathBuf,
        /// The new plugin directory.
        new: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a JSON Schema: of the policy file (default), the plugin manifest, a grant file, or
    /// an audit record.
    Schema {
        /// Which schema.
        #[arg(default_value = "policy", value_parser = ["policy", "manifest", "audit", "grant"])]
        which: String,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Reporting commands end quietly when their reader goes away; `exec` and `run` keep
    // supervising (they handle a closed stdout themselves).
    if !matches!(
        cli.command,
        Cmd::Exec { .. } | Cmd::Run { .. } | Cmd::Serve { .. }
    ) {
        plugbox::sys::default_sigpipe();
    }
    match cli.command {
        Cmd::Exec {
            policy,
            report_json,
            env,
            argv,
        } => exec::exec(policy, report_json, env, argv),
        Cmd::Probe { json, groups } => probe(json, groups),
        Cmd::Schema { which } => {
            let schema = match which.as_str() {
                "manifest" => plugbox::manifest::file::json_schema(),
                "audit" => plugbox::audit::record::json_schema(),
                "grant" => plugbox::manifest::grant_file::json_schema(),
                _ => file::json_schema(),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Cmd::Audit { action } => {
            let result = match action {
                AuditCmd::Verify {
                    files,
                    json,
                    keys,
                    anchors,
                } if !keys.is_empty() || anchors.is_some() => {
                    audit_keys::verify_cmd(&files, &keys, anchors.as_deref(), json)
                }
                AuditCmd::Verify { files, json, .. } => audit::verify_cmd(&files, json),
                AuditCmd::Keygen { out } => audit_keys::keygen(&out),
                AuditCmd::Show {
                    files,
                    plugin,
                    event,
                    decision,
                    since,
                    json,
                    follow,
                } => audit::show(
                    &files,
                    &audit::ShowFilter {
                        plugin,
                        event,
                        decision,
                        since,
                        json,
                        follow,
                    },
                ),
                AuditCmd::Summary { files } => audit_summary::summary(&files),
            };
            result.unwrap_or_else(|e| fail(&e))
        }
        Cmd::List {
            paths,
            python,
            sites,
            json,
            store,
        } => match list::list(&paths, python, sites, json, store) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Cmd::Diff { old, new, json } => match diff_cmd(&old, &new, json) {
            Ok(code) => code,
            Err(e) => fail(&e),
        },
        Cmd::Serve {
            audit,
            state,
            log_format,
            durability,
            capabilities,
            allow_ungranted,
            clamp,
            metrics,
            signing,
        } => {
            init_logging(&log_format);
            let opts = serve::ServeOptions {
                audit,
                state,
                durability,
                capabilities,
                allow_ungranted,
                clamp,
                metrics,
                signing,
            };
            serve::serve(opts).unwrap_or_else(|e| fail(&e))
        }
        Cmd::Install { dir, store } => match install::install(&dir, store) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Cmd::Check { path, grant, store } => {
            match check::check(&path, grant.as_deref(), store.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Cmd::Run {
            dir,
            grant,
            clamp,
            audit,
            state,
            calls,
            args,
            log_format,
            durability,
            stats,
            signing,
        } => {
            init_logging(&log_format);
            let sub = matches.subcommand_matches("run");
            let calls = match pair_calls(sub, calls, args) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let opts = run::RunOptions {
                dir,
                grant,
                clamp,
                audit,
                state,
                calls,
                durability,
                stats,
                signing,
            };
            match run::run(opts) {
                Ok(code) => code,
                Err(e) => fail(&e),
            }
        }
    }
}

fn diff_cmd(old: &std::path::Path, new: &std::path::Path, json: bool) -> Result<ExitCode, String> {
    let load =
        |p: &std::path::Path| plugbox::manifest::Manifest::load(p).map_err(|e| e.to_string());
    let (o, n) = (load(old)?, load(new)?);
    let changes = plugbox::manifest::diff::diff(&o, &n);
    if json {
        println!("{}", plugbox::display::json_pretty(&changes));
    } else {
        let head = format!("{} {} -> {} {}", o.name, o.version, n.name, n.version);
        println!("{}", plugbox::display::escape(&head));
        if changes.is_empty() {
            println!("  asks for nothing more");
        }
        for c in &changes {
            let line = format!("  {:<10} {:<36} {}", c.kind, c.field, c.detail);
            println!("{}", plugbox::display::escape(&line));
        }
    }
    let escalates = changes.iter().any(|c| c.kind == "escalates");
    Ok(if escalates {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Pairs each `--args` with the `--call` before it, by position on the command line.
fn pair_calls(
    m: Option<&ArgMatches>,
    calls: Vec<String>,
    args: Vec<String>,
) -> Result<Vec<run::CallSpec>, String> {
    let call_at: Vec<usize> = m
        .and_then(|m| m.indices_of("calls"))
        .map(Iterator::collect)
        .unwrap_or_default();
    let args_at: Vec<usize> = m
        .and_then(|m| m.indices_of("args"))
        .map(Iterator::collect)
        .unwrap_or_default();
    let mut specs: Vec<run::CallSpec> = calls
        .into_iter()
        .map(|command| run::CallSpec {
            command,
            args: serde_json::json!({}),
        })
        .collect();
    for (text, at) in args.iter().zip(args_at) {
        let Some(owner) = call_at.iter().rposition(|&c| c < at) else {
            return Err(format!("cli: --args {text:?} comes before any --call"));
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("cli: --args {text:?}: {e}"))?;
        if !value.is_object() {
            return Err(format!("cli: --args {text:?}: must be a JSON object"));
        }
        specs[owner].args = value;
    }
    Ok(specs)
}

/// Operational logs (not the audit log) on stderr; `PLUGBOX_LOG` filters them.
fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLUGBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal, and never when NO_COLOR is set (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Prints plugbox's own failure (control and bidi characters escaped: an error quotes
/// manifests, paths and plugin text) and returns its exit status.
pub(crate) fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!(
        "plugbox: {}",
        plugbox::display::escape_lines(&error.to_string())
    );
    ExitCode::from(EXIT_ENGINE)
}

fn probe(json: bool, groups: bool) -> ExitCode {
    let features = plugbox::probe::probe();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&features).unwrap_or_default()
        );
    } else {
        for f in &features {
            let mark = if f.available { "yes" } else { "NO " };
            println!("{mark}  {:<22} {}", f.name, f.detail);
        }
    }
    if groups {
        println!();
        for g in syscall_groups::BASELINE
            .iter()
            .chain(syscall_groups::OPTIONAL)
        {
            let names: Vec<&str> = g.syscalls.iter().map(|s| s.0).collect();
            println!(
                "{:<16} {}\n                 {}",
                g.name,
                g.about,
                names.join(" ")
            );
        }
    }
    if features
        .iter()
        .all(|f| f.available || f.name == "uid_switch")
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
