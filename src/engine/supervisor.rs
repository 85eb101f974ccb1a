//! One task per loaded plugin: it watches every instance, pings them on an interval, replaces
//! failed ones under the restart policy (exponential backoff, a cap per window, then an open
//! circuit with one trial after `circuit_open_seconds`), and grows the pool under load.

use super::drain::{recycle_times, Stop};
use super::instance::Instance;
use super::launcher::Launcher;
use super::lifecycle::State;
use super::plugin::{Managed, StartKind, Wake};
use super::restart::{RestartTracker, Verdict};
use crate::audit::{escape_text, EventKind, Record};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Starts watching `instance`: its exit wakes the supervisor, and so do the two moments of
/// its recycle before `limits.wall_seconds` (see [`recycle_times`]).
pub(crate) fn watch(m: &Arc<Managed>, instance: Arc<Instance>) {
    let wake = m.wake.clone();
    let limits = m.validated().manifest.policy.limits().clone();
    let wall = Duration::from_secs(limits.wall_seconds);
    let times = (!wall.is_zero()).then(|| recycle_times(wall, limits.call_timeout));
    let born = Instant::from_std(instance.born());
    tokio::spawn(async move {
        let waiter = Arc::clone(&instance);
        let exited = async move { waiter.wait().await };
        tokio::pin!(exited);
        let moments = times.map(|(start, drain_by)| [(start, false), (drain_by, true)]);
        let mut ended = None;
        for (at, last) in moments.into_iter().flatten() {
            tokio::select! {
                info = &mut exited => {
                    ended = Some(info);
                    break;
                }
                _ = tokio::time::sleep_until(born + at) => {
                    let _ = wake.send(Wake::Recycle { instance: Arc::clone(&instance), last });
                }
            }
        }
        let info = match ended {
            Some(info) => info,
            None => exited.await,
        };
        let wall_clock = info.cause.starts_with(super::fate::WALL_CLOCK_CAUSE);
        let _ = wake.send(Wake::Exited {
            instance,
            cause: info.cause,
            wall_clock,
        });
    });
}

/// Runs until the plugin is unloaded or the engine is gone.
pub(crate) async fn run(
    launcher: Launcher,
    m: Arc<Managed>,
    mut rx: mpsc::UnboundedReceiver<Wake>,
) {
    let mut sup = Supervisor::new(launcher, Arc::clone(&m));
    loop {
        let health = sup.next_health;
        let restart = sup.restart_at;
        let trial = sup.trial_at;
        tokio::select! {
            wake = rx.recv() => match wake {
                Some(Wake::Stop) | None => return,
                Some(wake) => sup.on_wake(wake),
            },
            _ = sleep_until(restart), if restart.is_some() => {
                sup.restart_at = None;
                sup.fill(StartKind::Restart);
            }
            _ = sleep_until(trial), if trial.is_some() => {
                sup.trial_at = None;
                sup.start(StartKind::Trial);
            }
            _ = tokio::time::sleep_until(health) => {
                sup.probe_all();
                sup.retire_idle();
            }
        }
        if matches!(m.state(), State::Draining | State::Stopped) {
            return;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Supervisor {
    launcher: Launcher,
    m: Arc<Managed>,
    tracker: RestartTracker,
    /// Starts asked for and not yet finished.
    starting: usize,
    restart_at: Option<Instant>,
    trial_at: Option<Instant>,
    next_health: Instant,
    /// Instances nearing their wall budget, each waiting for a replacement being started.
    recycling: Vec<Arc<Instance>>,
}

mod recycle;

impl Supervisor {
    fn new(launcher: Launcher, m: Arc<Managed>) -> Self {
        let policy = m.validated().manifest.policy.supervision().clone();
        let next_health = Instant::now() + policy.health_interval;
        Self {
            launcher,
            m,
            tracker: RestartTracker::new(policy),
            starting: 0,
            restart_at: None,
            trial_at: None,
            next_health,
            recycling: Vec::new(),
        }
    }

    fn on_wake(&mut self, wake: Wake) {
        if matches!(self.m.state(), State::Draining | State::Stopped) {
            return;
        }
        match wake {
            Wake::Exited {
                instance,
                cause,
                wall_clock,
            } => {
                // Retired instances (reload, scale down) were taken out of the pool already.
                if !self.m.remove(&instance) || instance.retiring() {
                    return;
                }
                let subject = crate::audit::Subject {
                    instance: instance.instance().to_owned(),
                    ..self.m.subject()
                };
                // Reaching limits.wall_seconds is the instance's planned end, not a failure.
                let to = if wall_clock {
                    State::Stopped
                } else {
                    State::Failed
                };
                if let Err(e) = super::lifecycle::record_transition(
                    self.m.audit(),
                    &subject,
                    Some(State::Ready),
                    to,
                    Some(&cause),
                ) {
                    tracing::error!("{e}");
                }
                if wall_clock {
                    self.start(StartKind::Recycle);
                } else {
                    self.failed(&cause);
                }
            }
            Wake::Busy => {
                let max = self.m.validated().manifest.policy.process().instances as usize;
                if !self.m.circuit_open() && self.m.ready_count() + self.starting < max {
                    self.start(StartKind::ScaleUp);
                }
            }
            Wake::Started { result, why } => {
                self.starting = self.starting.saturating_sub(1);
                match result {
                    Ok(instance) => self.started(instance, why),
                    Err(e) => {
                        self.failed(&format!("{} failed at {}: {e}", kind_text(why), e.step()))
                    }
                }
            }
            Wake::Recycle { instance, last } => self.recycle(instance, last),
            Wake::Stop => {}
            Wake::Reloaded => {
                let policy = self.m.validated().manifest.policy.supervision().clone();
                self.next_health = Instant::now() + policy.health_interval;
                self.tracker = RestartTracker::new(policy);
                self.restart_at = None;
                self.trial_at = None;
            }
        }
    }

    /// An instance failed (or a start did): restart after a backoff, or open the circuit.
    fn failed(&mut self, cause: &str) {
        let policy = self.m.validated().manifest.policy.supervision().clone();
        match self.tracker.on_failure(std::time::Instant::now()) {
            Verdict::RestartAfter(delay) => {
                self.m.set_state(State::Degraded, Some(cause));
                let at = Instant::now() + delay;
                self.restart_at = Some(self.restart_at.map_or(at, |t| t.min(at)));
            }
            Verdict::OpenCircuit { restarts } => {
                self.restart_at = None;
                let why = format!(
                    "{restarts} restarts within {}s; last failure: {cause}",
                    policy.restart_window.as_secs()
                );
                self.trip(why);
                self.trial_at = Some(Instant::now() + policy.circuit_open);
            }
            Verdict::Never => {
                if self.m.ready_count() == 0 && self.starting == 0 {
                    self.trip(format!("restart = \"never\"; {cause}"));
                } else {
                    self.m.set_state(State::Degraded, Some(cause));
                }
            }
        }
    }

    /// Opens the circuit: calls fail fast, the remaining instances are stopped.
    fn trip(&mut self, why: String) {
        self.m.open_circuit(why.clone());
        self.m.set_state(State::Failed, Some(&why));
        for instance in self.m.take_all() {
            instance.retire();
            instance.kill(format!("circuit open: {why}"));
        }
    }

    fn started(&mut self, instance: Instance, why: StartKind) {
        let instance = Arc::new(instance);
        if matches!(
            why,
            StartKind::Restart | StartKind::Trial | StartKind::Recycle
        ) {
            // A recycle replaces an instance that reached its planned lifetime: not a failure.
            let total = if why == StartKind::Recycle {
                self.m.snapshot().restarts
            } else {
                self.m.count_restart()
            };
            let mut r = Record::new(
                EventKind::Restart,
                crate::audit::Subject {
                    instance: instance.instance().to_owned(),
                    ..self.m.subject()
                },
            );
            r.reason = Some(escape_text(kind_text(why)));
            r.detail = Some(serde_json::json!({
                "restarts": total,
                "in_window": self.tracker.restarts_in_window(std::time::Instant::now()),
            }));
            if let Err(e) = self.m.audit().write(&r) {
                tracing::error!("{e}");
            }
        }
        // A trial that is ready closes the circuit (so does any start that was already under
        // way when it opened and still came up: the plugin works again).
        if why == StartKind::Trial || self.m.circuit_open() {
            self.tracker.reset();
            self.trial_at = None;
            self.m.close_circuit();
        }
        watch(&self.m, Arc::clone(&instance));
        self.m.add(instance);
        if why == StartKind::Recycle {
            self.replaced();
        }
        let min_warm = self.m.validated().manifest.policy.process().min_warm as usize;
        if self.m.ready_count() >= min_warm {
            self.m.set_state(State::Ready, None);
        }
    }

    /// Starts as many instances as `min_warm` lacks.
    fn fill(&mut self, why: StartKind) {
        let min_warm = self.m.validated().manifest.policy.process().min_warm as usize;
        let have = self.m.ready_count() + self.starting;
        for _ in have..min_warm.max(1) {
            self.start(why);
        }
    }

    /// Starts one instance in the background; the result comes back as `Wake::Started`.
    fn start(&mut self, why: StartKind) {
        let Some(starting) = self.launcher.start(&self.m) else {
            return;
        };
        self.starting += 1;
        let wake = self.m.wake.clone();
        tokio::spawn(async move {
            let result = starting.await;
            let _ = wake.send(Wake::Started { result, why });
        });
    }

    /// Stops instances beyond `min_warm` that have had no call for `idle_seconds`: out of the
    /// pool first (no new call can pick them), then drained and shut down.
    fn retire_idle(&mut self) {
        let process = self.m.validated().manifest.policy.process().clone();
        let mut extra = self
            .m
            .ready_count()
            .saturating_sub(process.min_warm as usize);
        for instance in self.m.instances() {
            if extra == 0 {
                break;
            }
            if instance.in_flight() > 0 || instance.idle_for() < process.idle {
                continue;
            }
            let why = format!(
                "no call for {} s beyond min_warm ({})",
                process.idle.as_secs(),
                process.min_warm
            );
            if self.retire(&instance, Stop::Idle, why) {
                extra -= 1;
            }
        }
    }

    /// Pings every ready instance; one that misses the deadline is killed (and then replaced
    /// like any failed instance).
    fn probe_all(&mut self) {
        let policy = self.m.validated().manifest.policy.supervision().clone();
        self.next_health = Instant::now() + policy.health_interval;
        for instance in self.m.instances() {
            if !instance.begin_probe() {
                continue;
            }
            let m = Arc::clone(&self.m);
            let timeout = policy.health_timeout;
            tokio::spawn(async move {
                let pinged = instance.ping(timeout).await;
                instance.end_probe();
                if let Err(e) = pinged {
                    if instance.exited().is_some() || instance.retiring() {
                        return;
                    }
                    if instance.mark_unhealthy() {
                        health_failed(&m, &instance, timeout, &e.message);
                    }
                }
            });
        }
    }
}

fn health_failed(m: &Managed, instance: &Instance, timeout: Duration, why: &str) {
    let mut r = Record::new(
        EventKind::HealthFailure,
        crate::audit::Subject {
            instance: instance.instance().to_owned(),
            ..m.subject()
        },
    );
    r.rule = Some("supervision.health_timeout_ms");
    r.reason = Some(escape_text(why));
    r.detail = Some(serde_json::json!({ "timeout_ms": timeout.as_millis() as u64 }));
    if let Err(e) = m.audit().write(&r) {
        tracing::error!("{e}");
    }
    instance.kill(format!("health check failed: {why}"));
}

fn kind_text(why: StartKind) -> &'static str {
    match why {
        StartKind::Restart => "restart after a failure",
        StartKind::ScaleUp => "scale up",
        StartKind::Trial => "trial restart after the circuit was open",
        StartKind::Recycle => "recycle after limits.wall_seconds",
    }
}
