//! `plugbox serve --events`: the engine's plugin events written as `event` lines, in the audit
//! log's order, through the same bounded output queue as the answers (a host that reads slowly
//! slows the forwarding down; past the engine's backlog it gets one `lost` line with the count
//! instead of the events it missed, which the audit log still holds).

use crate::serve_io::{Line, Output};
use plugbox::engine::{Engine, PluginEvent};
use plugbox::serve::{EventLine, EventsLost};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::oneshot;

/// The forwarding task; [`Forwarder::finish`] writes what is queued and stops it.
pub struct Forwarder {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts forwarding `engine`'s events from now on to `out`.
pub fn forward(engine: &Engine, out: Output) -> Forwarder {
    let mut events = engine.events();
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = events.recv() => next,
                _ = &mut stopped => break,
            };
            match next {
                Ok(event) => write(&out, event).await,
                Err(RecvError::Lagged(count)) => lost(&out, count).await,
                Err(RecvError::Closed) => return,
            }
        }
        // Stopped: every event already sent to the channel, then nothing more.
        loop {
            match events.try_recv() {
                Ok(event) => write(&out, event).await,
                Err(TryRecvError::Lagged(count)) => lost(&out, count).await,
                Err(_) => return,
            }
        }
    });
    Forwarder { stop, task }
}

impl Forwarder {
    /// Writes the events queued so far, then stops.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn write(out: &Output, event: PluginEvent) {
    let line = EventLine { op: "event", event };
    let _ = out
        .send(Line::Answer(serde_json::to_value(line).unwrap_or_default()))
        .await;
}

async fn lost(out: &Output, count: u64) {
    let line = EventsLost {
        op: "event",
        event: "lost",
        count,
    };
    let _ = out
        .send(Line::Answer(serde_json::to_value(line).unwrap_or_default()))
        .await;
}
