//! How a log file ends: rotated (a `rotate` record, the file archived, the chain going on in
//! a fresh file) or sealed (a closing checkpoint if signing, a `seal` record, synced).

use super::*;

impl Core {
    /// Ends the current file with a `rotate` record, archives it, and continues the chain in
    /// a fresh file at the same path.
    pub(super) fn rotate(&self, state: &mut State) -> Result<(), AuditError> {
        let number = state.rotations + 1;
        let archived = rotated::archive_name(&self.path, number);
        let mut r = Record::new(EventKind::Rotate, engine_subject());
        r.detail = Some(serde_json::json!({ "archived_as": archived, "continues_in": self.path }));
        self.append(state, &r)?;
        let result = state
            .file
            .as_ref()
            .map_or(Ok(()), File::sync_data)
            .and_then(|()| std::fs::rename(&self.path, &archived))
            .and_then(|()| open_append(&self.path));
        match result {
            Ok(file) => {
                *self.sync_file.lock().unwrap_or_else(|p| p.into_inner()) = file.try_clone().ok();
                state.file = Some(file);
                state.rotations = number;
                state.bytes_in_file = 0;
                state.opened_at = Instant::now();
                Ok(())
            }
            Err(source) => {
                self.fail(state, format!("rotation failed: {source}"));
                Err(AuditError::Write {
                    seq: state.next_seq,
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    pub(super) fn seal(&self) -> Result<u64, AuditError> {
        let mut state = self.lock();
        if self.options.danger_disabled {
            return Ok(state.next_seq);
        }
        if let Some(why) = &state.closed {
            return Err(self.closed_error(why));
        }
        // The closing checkpoint is signed under the lock: nothing may come between it and
        // the seal it announces.
        let closing = match &self.signer {
            Some(signer) => Some(signer.closing(self, &mut state)?),
            None => None,
        };
        let mut r = Record::new(EventKind::Seal, engine_subject());
        r.detail = Some(serde_json::json!({ "records": state.next_seq }));
        let seq = self.append(&mut state, &r)?;
        if let Some(file) = state.file.as_ref() {
            let _ = file.sync_all();
        }
        state.closed = Some("sealed".into());
        state.file = None;
        self.close_sync_file();
        drop(state);
        if let (Some(signer), Some(c)) = (&self.signer, closing) {
            signer.stop_and_hook(&c);
        }
        Ok(seq)
    }

    /// Ends group commit: the flusher thread finds no file and returns.
    pub(super) fn close_sync_file(&self) {
        *self.sync_file.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
