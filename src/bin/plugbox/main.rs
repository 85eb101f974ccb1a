//! The `plugbox` command line: `exec`, `probe`, `schema`.
//!
//! Exit status: the command's own, or 128+N when it was killed by signal N; 125 when plugbox
//! itself fails (bad policy, unenforceable layer, unreachable interpreter, exec failure), with
//! one line on stderr naming the layer and the cause.

use clap::{Parser, Subcommand};
use plugbox::launcher;
use plugbox::policy::{file, syscall_groups, Policy};
use plugbox::sandbox::{Environment, Prepared};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Print the JSON Schema of the policy file.
    Schema,
    /// Validate a policy file and print it as the engine understands it.
    Check {
        /// The policy file.
        policy: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Exec {
            policy,
            report_json,
            env,
            argv,
        } => exec(policy, report_json, env, argv),
        Cmd::Probe { json, groups } => probe(json, groups),
        Cmd::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&file::json_schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Cmd::Check { policy } => match Policy::load(&policy) {
            Ok(policy) => {
                println!("{policy:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("plugbox: {error}");
    ExitCode::from(EXIT_ENGINE)
}

fn exec(
    policy: PathBuf,
    report_json: Option<PathBuf>,
    env: Vec<String>,
    mut argv: Vec<OsString>,
) -> ExitCode {
    let policy = match Policy::load(&policy) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let mut environment = Environment::clean();
    for pair in &env {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => environment.set(k.as_ref(), v.as_ref()),
            _ => return fail(&format!("cli: --env {pair:?}: expected KEY=VALUE")),
        }
    }
    let program = argv.remove(0);
    let prepared = match Prepared::new(policy, &program, std::env::var_os("PATH").as_deref()) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    if let Some(path) = report_json {
        let report = prepared.report(environment.names());
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text + "\n") {
            return fail(&format!("report: cannot write {}: {e}", path.display()));
        }
    }
    match launcher::run(&prepared, argv, environment) {
        Ok(outcome) => ExitCode::from(outcome.exit_code().clamp(0, 255) as u8),
        Err(e) => fail(&e),
    }
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
