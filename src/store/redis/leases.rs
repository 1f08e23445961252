//! Fleet leases on cold members in Redis: one process fetches a member from
//! the upstream while the others wait for its record, and a "not a member"
//! answer is shared under the lease key for a short while.

use std::time::Duration;

use super::RedisStore;
use super::scripts::{END_LEASE, TRY_LEASE};
use super::transport::{Replay, eval};
use crate::domain::UserId;
use crate::store::{LeaseEnd, LeaseState, NOT_MEMBER_LEASE_TTL, StoreError, keys, ttl_millis};

impl RedisStore {
    /// Takes or renews the lease on fetching member `id` in one script call.
    pub(super) async fn take_lease(
        &self,
        id: UserId,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseState, StoreError> {
        let mut cmd = eval(TRY_LEASE, &[keys::lease_user(id)]);
        cmd.arg(owner).arg(ttl_millis(ttl));
        let reply: Vec<String> = self
            .command(Replay::Idempotent, &cmd, "lease reply")
            .await?;
        match reply.first().map(String::as_str) {
            Some("granted") => Ok(LeaseState::Granted),
            Some("taken") => Ok(LeaseState::Taken),
            Some("gone") => {
                let raw = reply.get(1).map(String::as_str).unwrap_or_default();
                Ok(parse_gone(raw).unwrap_or(LeaseState::Taken))
            }
            other => Err(StoreError::Corrupt(format!(
                "lease script answered {other:?}"
            ))),
        }
    }

    /// Frees the lease `owner` holds, or leaves the "not a member" answer
    /// under it.
    pub(super) async fn release_lease(
        &self,
        id: UserId,
        owner: &str,
        end: LeaseEnd,
    ) -> Result<(), StoreError> {
        let mut cmd = eval(END_LEASE, &[keys::lease_user(id)]);
        cmd.arg(owner);
        if let LeaseEnd::NotMember { code, message } = &end {
            cmd.arg(format!("gone:{code}:{message}"))
                .arg(ttl_millis(NOT_MEMBER_LEASE_TTL));
        }
        let _: i64 = self
            .command(Replay::Idempotent, &cmd, "end lease reply")
            .await?;
        Ok(())
    }
}

/// Reads a `gone:<code>:<message>` lease value back.
fn parse_gone(raw: &str) -> Option<LeaseState> {
    let rest = raw.strip_prefix("gone:")?;
    let (code, message) = rest.split_once(':')?;
    Some(LeaseState::NotMember {
        code: code.parse().ok()?,
        message: message.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_lease_reads_back_as_not_member() {
        assert_eq!(
            parse_gone("gone:1037:user left: the group"),
            Some(LeaseState::NotMember {
                code: 1037,
                message: "user left: the group".into()
            })
        );
        assert_eq!(parse_gone("0123abcd"), None);
    }
}
