//! The policy half of a reconcile: after the round's interface ops, one
//! `Policy/Apply` batch that takes the dataplane's policy to the desired
//! one ([`policy::diff`]).
//!
//! What the dataplane runs is read (`GetPolicyState`) once per connection
//! and at every periodic resync, and otherwise followed: after an
//! acknowledged batch it runs what the batch led to. The attachment of an
//! interface that the round created, replaced or deleted is taken as
//! unknown, so a new (or recreated) interface gets its attachment in the
//! batch that follows its creation: the dataplane holds such an interface
//! closed until then (fail closed), and the wait is one call long.
//! Attachments go only to interfaces the dataplane has.
//!
//! A dataplane that refuses the batch, or does not serve the Policy
//! service at all, leaves the round unsynced: pods stay closed rather than
//! run unpoliced.
//!
//! [`policy::diff`]: super::policy::diff()

use std::collections::{BTreeMap, BTreeSet};

use caracal_proto::dataplane as pb;
use tracing::{debug, info, warn};

use super::dataplane::{is_disconnect, Connection};
use super::policy::{self, DesiredPolicy};
use super::sync::Failure;

/// How the policy step of a reconcile ended.
#[derive(Debug)]
pub enum PolicyOutcome {
    /// The dataplane runs the desired policy.
    Synced,
    /// The dataplane refused the batch (or its state could not be read);
    /// `interfaces` are those whose attachments the batch carried.
    Refused {
        failure: Failure,
        interfaces: Vec<String>,
    },
    Disconnected,
}

/// The policy sync's memory, for one connection at a time.
#[derive(Debug, Default)]
pub struct PolicySync {
    /// What the dataplane runs, as far as this connection knows; `None`:
    /// read it before the next batch.
    known: Option<DesiredPolicy>,
}

impl PolicySync {
    /// A new connection: nothing is known of it.
    pub fn connected(&mut self) {
        self.known = None;
    }

    /// Reads the dataplane's state again before the next batch (the
    /// periodic resync: something else may have changed it).
    pub fn forget(&mut self) {
        self.known = None;
    }

    /// Brings the dataplane's policy to `desired`. `touched` are the
    /// interfaces this round's ops created, replaced or deleted, or failed
    /// to; `present` those the dataplane has now.
    pub async fn reconcile(
        &mut self,
        conn: &Connection,
        revision: u64,
        desired: DesiredPolicy,
        touched: &BTreeSet<String>,
        present: &BTreeMap<String, pb::Interface>,
    ) -> PolicyOutcome {
        let mut known = match self.known.take() {
            Some(known) => known,
            None => match conn.policy_state().await {
                Ok(state) => DesiredPolicy::from_state(state),
                Err(s) => return failed(&s, Vec::new()),
            },
        };
        known
            .endpoints
            .retain(|name, _| !touched.contains(name) && present.contains_key(name));
        let mut want = desired;
        want.endpoints.retain(|name, _| present.contains_key(name));
        let diffed = std::time::Instant::now();
        let batch = policy::diff(&known, &want);
        let diff_us = diffed.elapsed().as_micros() as u64;
        if policy::diff::is_empty(&batch) {
            self.known = Some(want);
            return PolicyOutcome::Synced;
        }
        let interfaces: Vec<String> = batch
            .set_endpoints
            .iter()
            .map(|e| e.interface.clone())
            .collect();
        let summary = format!(
            "{} new and {} changed IP sets, {} policies, {} attachments; {} deletions",
            batch.set_ip_sets.len(),
            batch.update_ip_sets.len(),
            batch.set_policies.len(),
            batch.set_endpoints.len(),
            batch.delete_policies.len() + batch.delete_ip_sets.len(),
        );
        debug!(revision, %summary, diff_us, "applying policy");
        match conn.apply_policy(batch).await {
            Ok(generation) => {
                info!(revision, generation, %summary, "policy updated");
                self.known = Some(want);
                PolicyOutcome::Synced
            }
            Err(s) => failed(&s, interfaces),
        }
    }
}

/// What a failed call means for the round.
fn failed(status: &tonic::Status, interfaces: Vec<String>) -> PolicyOutcome {
    if is_disconnect(status) {
        return PolicyOutcome::Disconnected;
    }
    warn!(code = ?status.code(), error = %status.message(), "the dataplane refused policy");
    PolicyOutcome::Refused {
        failure: Failure {
            code: status.code(),
            message: status.message().to_owned(),
        },
        interfaces,
    }
}
