//! The `plugbox` command line: `exec`, `run`, `serve`, `check`, `list`, `install`, `probe`,
//! `schema`, `audit`, `diff`, `new`.
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
mod cli;
mod exec;
mod forwarded;
mod install;
mod list;
mod new;
mod paths;
mod run;
mod serve;
mod serve_events;
mod serve_input;
mod serve_io;
mod serve_metrics;
mod serve_order;
mod signals;
mod signatures;
mod stub;
mod syntax;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use cli::{AuditCmd, Cli, Cmd, EXIT_ENGINE};
use plugbox::policy::{file, syscall_groups};
use std::process::ExitCode;

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
                "serve" => plugbox::serve::json_schema(),
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
            group,
            namespace,
        } => match plugbox::discovery::Names::new(&group, &namespace) {
            Ok(names) => match list::list(&paths, python, sites, json, store, &names) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            },
            Err(e) => fail(&e.to_string()),
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
            protocol,
            events,
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
                protocol,
                events,
                signing,
            };
            serve::serve(opts).unwrap_or_else(|e| fail(&e))
        }
        Cmd::New { name, dir } => new::new_cmd(&name, dir),
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
            stubs,
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
                stubs,
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
