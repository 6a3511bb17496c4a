//! Leader election over a `coordination.k8s.io/v1` Lease, for the few
//! writes one replica must make for all (resource status, the
//! `istio-ca-root-cert` ConfigMaps). Serving xDS never needs it: every
//! replica serves the same state.
//!
//! The usual client-go scheme: the holder renews `renewTime` every third
//! of the lease; anyone may take a lease whose `renewTime` is older than
//! its duration. Every write carries the Lease's resourceVersion, so two
//! replicas racing for it cannot both win. A leader that cannot renew in
//! time steps down before the lease runs out, so two leaders never
//! overlap by more than clock skew.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Lease meshd replicas elect with.
pub const LEASE_NAME: &str = "meshd-leader";

/// One replica's part in the election.
#[derive(Debug)]
pub struct Elector {
    leader: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Elector {
    /// Starts campaigning for `namespace/meshd-leader` as `identity`, with
    /// a lease of `duration`.
    pub fn start(client: Client, namespace: &str, identity: String, duration: Duration) -> Self {
        let (tx, leader) = watch::channel(false);
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let task = tokio::spawn(campaign(api, identity, duration, tx));
        Self { leader, task }
    }

    /// True while this replica leads; changes as it wins or loses.
    pub fn leader(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// True if this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed + SignedDuration::from_secs(secs) < now
}

async fn campaign(api: Api<Lease>, me: String, duration: Duration, tx: watch::Sender<bool>) {
    let renew_every = duration / 3;
    let secs = i32::try_from(duration.as_secs().max(1)).unwrap_or(15);
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        let now = Timestamp::now();
        let attempt = try_acquire_or_renew(&api, &me, secs, now).await;
        match attempt {
            Ok(true) => {
                last_renewed = Some(tokio::time::Instant::now());
                if !*tx.borrow() {
                    tracing::info!(identity = me, "elected leader");
                }
                tx.send_replace(true);
            }
            Ok(false) => {
                if *tx.borrow() {
                    tracing::info!(identity = me, "another replica holds the lease now");
                }
                tx.send_replace(false);
                last_renewed = None;
            }
            Err(e) => {
                tracing::warn!(identity = me, error = %e, "the leader Lease cannot be read or written");
                // Step down before the lease can run out under us.
                if last_renewed.is_some_and(|t| t.elapsed() > duration * 2 / 3) {
                    tx.send_replace(false);
                    last_renewed = None;
                }
            }
        }
        tokio::time::sleep(renew_every).await;
    }
}

/// One round: `Ok(true)` if `me` holds the lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    me: &str,
    secs: i32,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let stamp = Some(MicroTime(now));
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.into()),
                lease_duration_seconds: Some(secs),
                acquire_time: stamp.clone(),
                renew_time: stamp,
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let held_by_me = spec.holder_identity.as_deref() == Some(me);
    if !held_by_me && !expired(spec, now) {
        return Ok(false);
    }
    if !held_by_me {
        spec.holder_identity = Some(me.into());
        spec.acquire_time = stamp.clone();
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = stamp;
    spec.lease_duration_seconds = Some(secs);
    // The resourceVersion read above makes this a compare-and-swap.
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_duration_from_the_last_renewal() {
        let now = Timestamp::now();
        let spec = |ago: i64| LeaseSpec {
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(ago))),
            lease_duration_seconds: Some(10),
            ..Default::default()
        };
        assert!(!expired(&spec(9), now));
        assert!(expired(&spec(11), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
