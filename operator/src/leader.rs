//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas can run and only one
//! reconciles.
//!
//! The holder renews the Lease every [`LeaseConfig::renew_every`]; another replica takes it over once
//! `renewTime + leaseDurationSeconds` has passed. Every write is a replace carrying the
//! `resourceVersion` that was read, so of two replicas racing for an expired Lease exactly one wins (the
//! other gets a 409 Conflict). A holder that cannot renew for a whole lease duration must stop
//! reconciling before another replica may start: [`LeaderElector::keep`] returns at that point.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews (well under `duration`).
    pub renew_every: Duration,
}

/// What to do with a Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a Lease that has not expired.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// Decides from the Lease as read (pure).
pub fn decide(lease: &Lease, identity: &str, now: Timestamp) -> Decision {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match spec.renew_time.or(spec.acquire_time) {
        Some(MicroTime(t)) if t + duration > now => Decision::Follow { holder },
        _ => Decision::Acquire,
    }
}

/// Errors of the election.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaderError {
    /// The API server refused or failed.
    #[error("lease: {0}")]
    Kube(#[from] kube::Error),
}

/// Acquires and renews one Lease.
#[derive(Clone, Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    /// An elector for the Lease `cfg.name` in `api`'s namespace.
    pub fn new(api: Api<Lease>, cfg: LeaseConfig) -> Self {
        LeaderElector { api, cfg }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp, acquire: bool) -> LeaseSpec {
        let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.cfg.duration.as_secs()).unwrap_or(i32::MAX)),
            acquire_time: if acquire {
                Some(MicroTime(now))
            } else {
                previous.and_then(|s| s.acquire_time.clone())
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if acquire && previous.is_some() {
                transitions + 1
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to take or renew the Lease. `Ok(true)`: we hold it until `now + duration`.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, LeaderError> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.cfg.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(None, now, true)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let acquire = match decide(&lease, &self.cfg.identity, now) {
            Decision::Follow { .. } => return Ok(false),
            Decision::Acquire => true,
            Decision::Renew => false,
        };
        lease.spec = Some(self.spec(lease.spec.as_ref(), now, acquire));
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.cfg.renew_every).await;
        }
    }

    /// Renews the Lease until renewal has failed for a whole lease duration (or another replica took
    /// it), then returns: the caller must stop reconciling.
    pub async fn keep(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_every).await;
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("another replica holds the leader Lease");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "could not renew the leader Lease"),
            }
            // Stop a renewal period early, so we are gone before the Lease can expire elsewhere.
            if last_renewed.elapsed() + self.cfg.renew_every >= self.cfg.duration {
                tracing::error!("could not renew the leader Lease in time");
                return;
            }
        }
    }

    /// Gives the Lease up (at shutdown), so another replica takes over without waiting for expiry.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
