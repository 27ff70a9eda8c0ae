//! The engine's handle on a group's state machine, whatever its kind.

use std::any::Any;
use std::io::{Read, Write};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use drakkar_raft::LogIndex;

use crate::statemachine::{ConcurrentStateMachine, OnDiskStateMachine, SmEntry, SmError, StateMachine};

/// A user's state machine, as handed to [`crate::NodeHost::start_replica`].
pub enum StateMachineBox {
    /// In-memory, serial.
    Regular(Box<dyn StateMachine>),
    /// In-memory, concurrent lookups.
    Concurrent(Arc<dyn ConcurrentStateMachine>),
    /// On-disk.
    OnDisk(Arc<dyn OnDiskStateMachine>),
}

/// A shared handle: the apply worker updates through it, readers look up through it.
#[derive(Clone)]
pub(crate) enum SmHandle {
    Regular(Arc<RwLock<Box<dyn StateMachine>>>),
    Concurrent(Arc<dyn ConcurrentStateMachine>),
    OnDisk(Arc<dyn OnDiskStateMachine>),
}

fn poisoned() -> SmError {
    SmError::Other("state machine lock poisoned by an earlier panic".into())
}

impl SmHandle {
    pub(crate) fn new(b: StateMachineBox) -> Self {
        match b {
            StateMachineBox::Regular(sm) => SmHandle::Regular(Arc::new(RwLock::new(sm))),
            StateMachineBox::Concurrent(sm) => SmHandle::Concurrent(sm),
            StateMachineBox::OnDisk(sm) => SmHandle::OnDisk(sm),
        }
    }

    pub(crate) fn is_on_disk(&self) -> bool {
        matches!(self, SmHandle::OnDisk(_))
    }

    /// Opens an on-disk state machine; in-memory ones start empty (index 0).
    pub(crate) fn open(&self) -> Result<LogIndex, SmError> {
        match self {
            SmHandle::OnDisk(sm) => sm.open(),
            _ => Ok(LogIndex(0)),
        }
    }

    pub(crate) fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        match self {
            SmHandle::Regular(sm) => sm.write().map_err(|_| poisoned())?.update(entries),
            SmHandle::Concurrent(sm) => sm.update(entries),
            SmHandle::OnDisk(sm) => sm.update(entries),
        }
    }

    pub(crate) fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError> {
        match self {
            SmHandle::Regular(sm) => sm.read().map_err(|_| poisoned())?.lookup(query),
            SmHandle::Concurrent(sm) => sm.lookup(query),
            SmHandle::OnDisk(sm) => sm.lookup(query),
        }
    }

    /// Writes the full state.
    pub(crate) fn save(&self, w: &mut dyn Write) -> Result<(), SmError> {
        match self {
            SmHandle::Regular(sm) => sm.read().map_err(|_| poisoned())?.save_snapshot(w),
            SmHandle::Concurrent(sm) => {
                let p = sm.prepare_snapshot()?;
                sm.save_snapshot(p, w)
            }
            SmHandle::OnDisk(sm) => {
                let p = sm.prepare_snapshot()?;
                sm.save_snapshot(p, w)
            }
        }
    }

    /// Captures a point-in-time view to save later, concurrently with updates (`None` for the regular kind,
    /// whose save must hold the lock and so runs in place).
    pub(crate) fn prepare(&self) -> Result<Option<Box<dyn Any + Send>>, SmError> {
        match self {
            SmHandle::Regular(_) => Ok(None),
            SmHandle::Concurrent(sm) => sm.prepare_snapshot().map(Some),
            SmHandle::OnDisk(sm) => sm.prepare_snapshot().map(Some),
        }
    }

    /// Writes a view captured by [`SmHandle::prepare`] (or, for the regular kind, the current state).
    pub(crate) fn save_prepared(
        &self,
        prepared: Option<Box<dyn Any + Send>>,
        w: &mut dyn Write,
    ) -> Result<(), SmError> {
        match (self, prepared) {
            (SmHandle::Concurrent(sm), Some(p)) => sm.save_snapshot(p, w),
            (SmHandle::OnDisk(sm), Some(p)) => sm.save_snapshot(p, w),
            _ => self.save(w),
        }
    }

    pub(crate) fn recover(&self, r: &mut dyn Read) -> Result<(), SmError> {
        match self {
            SmHandle::Regular(sm) => sm.write().map_err(|_| poisoned())?.recover_from_snapshot(r),
            SmHandle::Concurrent(sm) => sm.recover_from_snapshot(r),
            SmHandle::OnDisk(sm) => sm.recover_from_snapshot(r),
        }
    }

    /// The result an on-disk state machine kept for the entry at `index` (None: not kept, or another
    /// kind, whose entries are always applied again after a restart).
    pub(crate) fn result_of(
        &self,
        index: LogIndex,
    ) -> Result<Option<crate::statemachine::SmResult>, SmError> {
        match self {
            SmHandle::OnDisk(sm) => sm.result_of(index),
            _ => Ok(None),
        }
    }

    pub(crate) fn sync(&self) -> Result<(), SmError> {
        match self {
            SmHandle::OnDisk(sm) => sm.sync(),
            _ => Ok(()),
        }
    }
}
