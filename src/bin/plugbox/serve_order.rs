//! Per-plugin order of `plugbox serve` requests, without reading any file on the request loop.
//!
//! A request naming a plugin waits for the earlier `load`, `reload` and `unload` of it; those
//! wait for every earlier request naming it. A `load` names its plugin only in its manifest,
//! which its own task reads (off the loop): until then it is *unresolved*, and a later request
//! first waits for its name, then (if it is the same plugin) for it to finish. A `call` of a
//! plugin that is loaded, with no earlier lifecycle request of it pending, waits for no
//! unresolved load: a load of a loaded name cannot change it (it joins or conflicts), so one
//! slow or hostile plugin directory never holds up calls of the plugins already running.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A request's plugin: `None` while its manifest is being read, then `Some(name)`, or
/// `Some(None)` if it has none (the manifest could not be read).
type Name = Option<Option<String>>;

/// A pending request as later ones see it.
#[derive(Clone)]
struct Entry {
    name: watch::Receiver<Name>,
    lifecycle: bool,
    /// Its sender is dropped when the request finishes.
    done: watch::Receiver<()>,
}

/// What a request is about.
pub enum Subject {
    /// No plugin (`stats`).
    Nothing,
    /// A named plugin; `loaded` says whether it is loaded when the request is read.
    Plugin {
        name: String,
        lifecycle: bool,
        loaded: bool,
    },
    /// A `load`: the name is not known yet.
    Load,
}

/// Requests still pending, in arrival order.
#[derive(Default)]
pub struct Order {
    pending: Mutex<BTreeMap<u64, Entry>>,
    next: AtomicU64,
}

/// One request's place in the order; dropping it marks the request finished.
pub struct Ticket {
    order: Arc<Order>,
    seq: Option<u64>,
    name: watch::Sender<Name>,
    lifecycle: bool,
    earlier: Vec<Entry>,
    skip_unresolved: bool,
    _done: watch::Sender<()>,
}

impl Order {
    /// Files a request just read from stdin.
    pub fn file(self: &Arc<Self>, subject: Subject) -> Ticket {
        let (done, done_rx) = watch::channel(());
        let (name, lifecycle, loaded) = match subject {
            Subject::Nothing => (Some(None), false, false),
            Subject::Plugin {
                name,
                lifecycle,
                loaded,
            } => (Some(Some(name)), lifecycle, loaded),
            Subject::Load => (None, true, false),
        };
        let mine = name.clone().flatten();
        let (name_tx, name_rx) = watch::channel(name);
        let mut ticket = Ticket {
            order: Arc::clone(self),
            seq: None,
            name: name_tx,
            lifecycle,
            earlier: Vec::new(),
            skip_unresolved: false,
            _done: done,
        };
        if matches!(*name_rx.borrow(), Some(None)) {
            return ticket;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let relevant = |e: &Entry| match (&*e.name.borrow(), &mine) {
            (None, _) | (_, None) => true,
            (Some(theirs), Some(mine)) => {
                theirs.as_ref() == Some(mine) && (lifecycle || e.lifecycle)
            }
        };
        ticket.earlier = pending.values().filter(|e| relevant(e)).cloned().collect();
        ticket.skip_unresolved = !lifecycle
            && loaded
            && !ticket
                .earlier
                .iter()
                .any(|e| e.lifecycle && e.name.borrow().is_some());
        let seq = self.next.fetch_add(1, Ordering::AcqRel);
        pending.insert(
            seq,
            Entry {
                name: name_rx,
                lifecycle,
                done: done_rx,
            },
        );
        ticket.seq = Some(seq);
        ticket
    }
}

impl Ticket {
    /// A load's plugin name, once its manifest was read (`None`: it could not be).
    pub fn named(&self, name: Option<String>) {
        self.name.send_replace(Some(name));
    }

    /// Waits for every earlier request this one must follow.
    pub async fn wait(&mut self) {
        let Some(Some(mine)) = self.name.borrow().clone() else {
            return;
        };
        for entry in std::mem::take(&mut self.earlier) {
            if self.skip_unresolved && entry.name.borrow().is_none() {
                continue;
            }
            let mut name = entry.name.clone();
            let theirs = match name.wait_for(Option::is_some).await {
                Ok(resolved) => resolved.clone().flatten(),
                Err(_) => None,
            };
            if theirs.as_deref() == Some(mine.as_str()) && (self.lifecycle || entry.lifecycle) {
                let mut done = entry.done.clone();
                while done.changed().await.is_ok() {}
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.order
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&seq);
        }
    }
}
