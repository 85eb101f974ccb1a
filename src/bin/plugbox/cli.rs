//! The command line's grammar: every subcommand, its arguments and their help texts (clap
//! derive). `main.rs` dispatches on it.

use crate::audit_keys;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum AuditCmd {
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
pub(crate) const EXIT_ENGINE: u8 = 125;

#[derive(Parser)]
#[command(
    name = "plugbox",
    version,
    about = "Run untrusted programs and plugins inside a kernel sandbox"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
        /// Answer host capability CAP with JSON, without a host (repeatable; development).
        /// The gate still decides each call, and each answer is audited as a `stub` record.
        #[arg(long = "stub", value_name = "CAP=JSON", value_parser = crate::stub::parse)]
        stubs: Vec<crate::stub::StubSpec>,
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
    /// call, describe, reload, unload, stats, shutdown), one JSON-line answer each on stdout,
    /// after a first `ready` line (docs/serve.md).
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
        /// The protocol version the host speaks (default: the newest; refused if this engine
        /// does not speak it).
        #[arg(long, value_name = "N", default_value_t = plugbox::serve::PROTOCOL)]
        protocol: u32,
        /// Write an `event` line for each plugin event (state changes, exits, restarts,
        /// circuit, health failures, refused loads).
        #[arg(long)]
        events: bool,
        #[command(flatten)]
        signing: audit_keys::SigningArgs,
    },
    /// Make a new plugin directory: a manifest, an entry file with two commands, a test for
    /// the SDK's pytest fixture, a README.
    New {
        /// The plugin's name: 1 to 64 of a-z 0-9 - (the manifest's rule).
        name: String,
        /// The directory to make (default: ./NAME); it must not exist, or be empty.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
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
    /// List plugins (directories, installed Python distributions, plugbox_plugins.* or an
    /// application's own group and namespace) without running any plugin code.
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
        /// The entry-point group searched in site directories (an application's own, e.g.
        /// `myapp.plugins`); a dotted identifier.
        #[arg(long, value_name = "GROUP", default_value = "plugbox.plugins")]
        group: String,
        /// The namespace package searched in site directories (`myapp.plugins` is
        /// SITE/myapp/plugins/NAME/plugbox.toml); a dotted identifier.
        #[arg(long, value_name = "PACKAGE", default_value = "plugbox_plugins")]
        namespace: String,
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
    /// Print a JSON Schema: of the policy file (default), the plugin manifest, a grant file, an
    /// audit record, or the lines of `plugbox serve`.
    Schema {
        /// Which schema.
        #[arg(default_value = "policy", value_parser = ["policy", "manifest", "audit", "grant", "serve"])]
        which: String,
    },
}
