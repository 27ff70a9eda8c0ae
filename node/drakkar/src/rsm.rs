//! The engine's handle on a group's state machine, whatever its kind.

use std::any::Any;
use std::io::{Read, Write};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use drakkar_raft::LogIndex;

use crate::statemachine::{
    ConcurrentStateMachine, OnDiskStateMachine, SmEntry, SmError, SmResult, StateMachine, Stop,
};

/// A user's state machine, as handed to [`crate::NodeHost::start_replica`]: one of the three kinds.
pub struct StateMachineBox(SmHandle);

impl StateMachineBox {
    /// An in-memory state machine with serial updates and lookups.
    pub fn regular(sm: impl StateMachine) -> Self {
        StateMachineBox(SmHandle::Regular(Arc::new(RwLock::new(Box::new(sm)))))
    }

    /// An in-memory state machine with lookups concurrent with updates (shared: the caller may keep a
    /// handle on it).
    pub fn concurrent<T: ConcurrentStateMachine>(sm: Arc<T>) -> Self {
        StateMachineBox(SmHandle::Concurrent(sm))
    }

    /// A state machine that owns its persistence (shared: the caller may keep a handle on it).
    pub fn on_disk<T: OnDiskStateMachine>(sm: Arc<T>) -> Self {
        StateMachineBox(SmHandle::OnDisk(sm))
    }
}

/// A [`ConcurrentStateMachine`] whose prepared snapshot's type is erased, so the engine holds any.
pub(crate) trait DynConcurrent: Send + Sync {
    fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError>;
    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError>;
    fn prepare(&self) -> Result<Box<dyn Any + Send>, SmError>;
    fn save(&self, prepared: Box<dyn Any + Send>, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError>;
    fn recover(&self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError>;
}

impl<T: ConcurrentStateMachine> DynConcurrent for T {
    fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        ConcurrentStateMachine::update(self, entries)
    }
    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError> {
        ConcurrentStateMachine::lookup(self, query)
    }
    fn prepare(&self) -> Result<Box<dyn Any + Send>, SmError> {
        Ok(Box::new(self.prepare_snapshot()?))
    }
    fn save(&self, prepared: Box<dyn Any + Send>, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError> {
        self.save_snapshot(*downcast::<T::Snapshot>(prepared)?, w, stop)
    }
    fn recover(&self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError> {
        self.recover_from_snapshot(r, stop)
    }
}

/// An [`OnDiskStateMachine`] whose prepared snapshot's type is erased, so the engine holds any.
pub(crate) trait DynOnDisk: Send + Sync {
    fn open(&self, stop: &Stop) -> Result<LogIndex, SmError>;
    fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError>;
    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError>;
    fn sync(&self) -> Result<(), SmError>;
    fn prepare(&self) -> Result<Box<dyn Any + Send>, SmError>;
    fn save(&self, prepared: Box<dyn Any + Send>, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError>;
    fn recover(&self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError>;
    fn result_of(&self, index: LogIndex) -> Result<Option<SmResult>, SmError>;
}

impl<T: OnDiskStateMachine> DynOnDisk for T {
    fn open(&self, stop: &Stop) -> Result<LogIndex, SmError> {
        OnDiskStateMachine::open(self, stop)
    }
    fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        OnDiskStateMachine::update(self, entries)
    }
    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError> {
        OnDiskStateMachine::lookup(self, query)
    }
    fn sync(&self) -> Result<(), SmError> {
        OnDiskStateMachine::sync(self)
    }
    fn prepare(&self) -> Result<Box<dyn Any + Send>, SmError> {
        Ok(Box::new(self.prepare_snapshot()?))
    }
    fn save(&self, prepared: Box<dyn Any + Send>, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError> {
        self.save_snapshot(*downcast::<T::Snapshot>(prepared)?, w, stop)
    }
    fn recover(&self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError> {
        self.recover_from_snapshot(r, stop)
    }
    fn result_of(&self, index: LogIndex) -> Result<Option<SmResult>, SmError> {
        OnDiskStateMachine::result_of(self, index)
    }
}

/// The prepared view the engine got from the same state machine's `prepare`. Invariant: the engine hands
/// `save` only what that machine's `prepare` returned, so this never fails.
fn downcast<S: 'static>(prepared: Box<dyn Any + Send>) -> Result<Box<S>, SmError> {
    prepared
        .downcast::<S>()
        .map_err(|_| SmError::Other("a prepared snapshot of another state machine".into()))
}

/// A shared handle: the apply worker updates through it, readers look up through it.
#[derive(Clone)]
pub(crate) enum SmHandle {
    Regular(Arc<RwLock<Box<dyn StateMachine>>>),
    Concurrent(Arc<dyn DynConcurrent>),
    OnDisk(Arc<dyn DynOnDisk>),
}

fn poisoned() -> SmError {
    SmError::Other("state machine lock poisoned by an earlier panic".into())
}

impl SmHandle {
    pub(crate) fn new(b: StateMachineBox) -> Self {
        b.0
    }

    pub(crate) fn is_on_disk(&self) -> bool {
        matches!(self, SmHandle::OnDisk(_))
    }

    /// Opens an on-disk state machine; in-memory ones start empty (index 0).
    pub(crate) fn open(&self, stop: &Stop) -> Result<LogIndex, SmError> {
        match self {
            SmHandle::OnDisk(sm) => sm.open(stop),
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
    pub(crate) fn save(&self, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError> {
        match self {
            SmHandle::Regular(sm) => sm.read().map_err(|_| poisoned())?.save_snapshot(w, stop),
            SmHandle::Concurrent(sm) => sm.save(sm.prepare()?, w, stop),
            SmHandle::OnDisk(sm) => sm.save(sm.prepare()?, w, stop),
        }
    }

    /// Captures a point-in-time view to save later, concurrently with updates (`None` for the regular kind,
    /// whose save must hold the lock and so runs in place).
    pub(crate) fn prepare(&self) -> Result<Option<Box<dyn Any + Send>>, SmError> {
        match self {
            SmHandle::Regular(_) => Ok(None),
            SmHandle::Concurrent(sm) => sm.prepare().map(Some),
            SmHandle::OnDisk(sm) => sm.prepare().map(Some),
        }
    }

    /// Writes a view captured by [`SmHandle::prepare`] (or, for the regular kind, the current state).
    pub(crate) fn save_prepared(
        &self,
        prepared: Option<Box<dyn Any + Send>>,
        w: &mut dyn Write,
        stop: &Stop,
    ) -> Result<(), SmError> {
        match (self, prepared) {
            (SmHandle::Concurrent(sm), Some(p)) => sm.save(p, w, stop),
            (SmHandle::OnDisk(sm), Some(p)) => sm.save(p, w, stop),
            _ => self.save(w, stop),
        }
    }

    pub(crate) fn recover(&self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError> {
        match self {
            SmHandle::Regular(sm) => sm.write().map_err(|_| poisoned())?.recover_from_snapshot(r, stop),
            SmHandle::Concurrent(sm) => sm.recover(r, stop),
            SmHandle::OnDisk(sm) => sm.recover(r, stop),
        }
    }

    /// The result an on-disk state machine kept for the entry at `index` (None: not kept, or another
    /// kind, whose entries are always applied again after a restart).
    pub(crate) fn result_of(&self, index: LogIndex) -> Result<Option<SmResult>, SmError> {
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
