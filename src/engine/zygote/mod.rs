//! A per-plugin zygote (`[process] zygote = true`): instances forked from a template that
//! is confined like an instance and has already imported the plugin, so an instance skips
//! the interpreter's start and the plugin's import. See `docs/zygote.md` for what instances
//! of one plugin then share (memory layout, uid) and what keeps them apart.
//!
//! The template starts with the first instance and lives as long as the activation's
//! [`Validated`] and the instances it forked. If it cannot start, dies, or answers a fork
//! with anything but a verified child, the zygote is given up for the activation: instances
//! are then spawned the usual way, and their spawn record says why.

mod group;
mod spawn;
mod template;
mod verify;

pub(crate) use group::TemplateGroup;
pub(crate) use template::Forked;

use super::validate::Validated;
use super::Engine;
use template::Template;
use tokio::sync::Mutex;

/// What the host does with `data` received from a template as a fork's answer, and with
/// `data` read as a forked pid's `/proc/PID/stat` (whose command name the plugin chooses): the
/// fuzz target `zygote_answer`. Never panics.
pub(crate) fn fuzz_answer(data: &[u8]) {
    if let Ok(answer) = template::decode(data) {
        if let Err(text) = template::pid_in(&answer) {
            assert!(!text.chars().any(char::is_control), "unescaped: {text:?}");
        }
    }
    let _ = verify::parse_stat(&String::from_utf8_lossy(data));
}

/// The zygote of one activation of a plugin.
#[derive(Default)]
pub(crate) struct Zygote {
    state: Mutex<State>,
}

#[derive(Default)]
enum State {
    /// No template yet (or the last one exited).
    #[default]
    Idle,
    /// A template that answers fork requests.
    Running(Template),
    /// Given up for this activation, and why.
    Unavailable(String),
}

impl Zygote {
    /// Forks instance `instance` of `v`, first starting the template if there is none. An
    /// error says why the zygote cannot serve (it is then given up).
    pub(crate) async fn fork(
        &self,
        engine: &Engine,
        v: &Validated,
        instance: &str,
    ) -> Result<Forked, String> {
        let timeout = engine.inner.config.handshake_timeout;
        let mut state = self.state.lock().await;
        if matches!(&*state, State::Running(t) if !t.alive()) {
            *state = State::Idle;
        }
        if matches!(&*state, State::Idle) {
            let lease = engine.lease_for(v).map_err(|e| e.summary().to_string())?;
            *state = match Template::start(&engine.inner, v, lease, timeout).await {
                Ok(template) => State::Running(template),
                Err(why) => State::Unavailable(format!("the template did not start: {why}")),
            };
        }
        let result = match &*state {
            State::Running(template) => template
                .fork(instance, timeout)
                .await
                .map_err(|why| format!("the template did not fork: {why}")),
            State::Unavailable(why) => return Err(why.clone()),
            State::Idle => Err("no template".to_owned()),
        };
        if let Err(why) = &result {
            *state = State::Unavailable(why.clone());
        }
        result
    }
}
