//! Parent side: everything expensive, done once per policy and command.
//!
//! [`Prepared::new`] resolves the command, builds the Landlock ruleset and the seccomp
//! program, plans the rlimits and the identity switch, and assembles the enforcement report.
//! Spawning from a [`Prepared`] then costs a fork, a handful of syscalls and an exec.

use super::child::ChildPlan;
use super::command::{CommandError, ResolvedCommand};
use super::landlock::{self, LandlockError, PreparedRuleset};
use super::private_view::{self, PrivateView, ViewFds, ViewGrant};
use super::report::{CapabilityReport, EnforcementReport, RlimitReport, SeccompReport};
use super::rlimits;
use super::seccomp::{self, SeccompBuildError, SeccompProgram};
use crate::policy::Policy;
use crate::sys;
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// Why a policy could not be prepared for a command.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The command could not be resolved or reached.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The Landlock layer cannot be enforced as the policy demands.
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    /// The seccomp program could not be built.
    #[error(transparent)]
    Seccomp(#[from] SeccompBuildError),
    /// The host's capabilities could not be read.
    #[error("capabilities: cannot read the host's capabilities: {0}")]
    Capabilities(String),
}

/// A policy prepared for one command: ready to spawn any number of times.
#[derive(Debug)]
pub struct Prepared {
    policy: Policy,
    command: ResolvedCommand,
    // Owns the ruleset fd that `plan.ruleset_fd` refers to.
    ruleset: PreparedRuleset,
    plan: Arc<ChildPlan>,
    // The zygote template's plan: the same but for its seccomp program (policies with
    // `[process] zygote` only).
    template_plan: Option<Arc<ChildPlan>>,
    seccomp: Arc<SeccompProgram>,
    rlimits: Vec<RlimitReport>,
    capabilities: CapabilityReport,
    ids: (u32, u32),
    // Own /proc and user database (root hosts only), and why not otherwise.
    view: Result<ViewGrant, String>,
}

impl Prepared {
    /// Prepares `policy` to run `program`, looked up on `search_path` if it has no slash.
    pub fn new(
        policy: Policy,
        program: &OsStr,
        search_path: Option<&OsStr>,
    ) -> Result<Self, PrepareError> {
        let command = ResolvedCommand::resolve(program, search_path)?;
        Self::for_command(policy, command)
    }

    /// Prepares `policy` to run `command`, already resolved (by a caller that needed it
    /// first, such as `plugbox exec` looking for a virtual environment).
    pub fn for_command(policy: Policy, command: ResolvedCommand) -> Result<Self, PrepareError> {
        let root = sys::geteuid() == 0;
        let (uid, gid) = if root {
            (policy.process().uid, policy.process().gid)
        } else {
            // A host that is not root keeps its own ids.
            (sys::geteuid(), sys::getegid())
        };
        if root {
            command.check_reachable(uid, gid)?;
        }
        let mut ruleset = landlock::prepare(&policy, &command)?;
        let view = private_view_for(root, &mut ruleset);
        let program = seccomp::build_cached(&policy)?;
        let (rlimit_settings, rlimit_report) = rlimits::plan(&policy);
        let setpcap = caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETPCAP)
            .map_err(|e| PrepareError::Capabilities(e.to_string()))?;
        let last_cap = last_capability().map_err(PrepareError::Capabilities)?;
        let plan_with = |seccomp: Vec<sys::SockFilter>| ChildPlan {
            rlimits: rlimit_settings.clone(),
            drop_bounding_up_to: setpcap.then_some(last_cap),
            lock_securebits: setpcap,
            switch_ids: root.then_some((uid, gid)),
            ruleset_fd: ruleset.fd.as_raw_fd(),
            seccomp,
        };
        let plan = plan_with(program.instructions.clone());
        let template_plan = match policy.process().zygote {
            true => Some(Arc::new(plan_with(
                seccomp::build_template(&policy)?.instructions,
            ))),
            false => None,
        };
        let capabilities = CapabilityReport {
            bounding_set_dropped: setpcap,
            securebits_locked: setpcap,
            effective: Vec::new(),
            permitted: Vec::new(),
            inheritable: Vec::new(),
            ambient: Vec::new(),
        };
        Ok(Self {
            policy,
            command,
            ruleset,
            plan: Arc::new(plan),
            template_plan,
            seccomp: program,
            rlimits: rlimit_report,
            capabilities,
            ids: (uid, gid),
            view,
        })
    }

    /// The policy this was prepared from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The resolved command.
    pub fn command(&self) -> &ResolvedCommand {
        &self.command
    }

    /// What every spawn from this preparation enforces. `environment` lists the variable
    /// names the spawn passes.
    pub fn report(&self, environment: Vec<String>) -> EnforcementReport {
        EnforcementReport {
            command: self.command.path().display().to_string(),
            executables: self
                .command
                .executables()
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            landlock: self.ruleset.report.clone(),
            seccomp: SeccompReport {
                instructions: self.seccomp.instructions.len(),
                sha256: self.seccomp.sha256(),
                default_action: "errno(ENOSYS)",
                groups: self.seccomp.groups.clone(),
                foreign_abi_action: "kill_process",
            },
            rlimits: self.rlimits.clone(),
            capabilities: self.capabilities.clone(),
            uid: self.ids.0,
            gid: self.ids.1,
            no_new_privs: true,
            new_session: true,
            parent_death_signal: "SIGKILL",
            environment,
            python_environment: None,
            private_view: match &self.view {
                Ok(_) => "enabled".to_owned(),
                Err(why) => why.clone(),
            },
        }
    }

    /// The private view's fds for a spawn as `uid`:`gid`, if this preparation has one.
    pub(crate) fn view_for(&self, uid: u32, gid: u32) -> std::io::Result<Option<ViewFds>> {
        match &self.view {
            Ok(grant) => grant
                .for_identity(self.ruleset.fd.as_raw_fd(), uid, gid)
                .map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The uid and gid the command runs as.
    pub fn ids(&self) -> (u32, u32) {
        self.ids
    }

    pub(crate) fn plan(&self) -> Arc<ChildPlan> {
        Arc::clone(&self.plan)
    }

    /// The zygote template's plan, when the policy asks for a zygote.
    pub(crate) fn template_plan(&self) -> Option<Arc<ChildPlan>> {
        self.template_plan.clone()
    }

    /// The instances' seccomp program, which a zygote instance stacks on the template's.
    pub(crate) fn instance_filter(&self) -> &[sys::SockFilter] {
        &self.plan.seccomp
    }
}

/// The private view when the host is root and the kernel can build it; the rules it adds
/// are listed in the report.
fn private_view_for(root: bool, ruleset: &mut PreparedRuleset) -> Result<ViewGrant, String> {
    if !root {
        return Err("unavailable: the host is not root (no mount namespace)".to_owned());
    }
    let view = PrivateView::shared()
        .map_err(|e| format!("unavailable: the kernel refused the detached mounts: {e}"))?;
    let grant = ViewGrant::new(view, ruleset.fd.as_raw_fd())
        .map_err(|e| format!("unavailable: landlock refused a rule on the private /proc: {e}"))?;
    for (path, what, rights) in private_view::REPORTED {
        let rights = rights.iter().map(|r| (*r).to_owned()).collect();
        ruleset
            .report
            .rules
            .push((std::path::PathBuf::from(format!("{path} ({what})")), rights));
    }
    Ok(grant)
}

/// The highest capability number the kernel knows, read once per process (it is fixed when
/// the kernel is built).
fn last_capability() -> Result<u32, String> {
    static LAST: std::sync::OnceLock<Result<u32, String>> = std::sync::OnceLock::new();
    LAST.get_or_init(|| {
        caps::runtime::procfs_all_supported(None)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|c| u32::from(c.index()))
            .max()
            .ok_or_else(|| "the kernel lists no capabilities".to_owned())
    })
    .clone()
}
