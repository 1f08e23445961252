//! Whether the group gives its members numbers at all.
//!
//! A member list row without `number` is normal: the group has member
//! numbering off, or the member has not been given one yet
//! (docs/UPSTREAM.md). One such member is a row that says "no number
//! assigned"; a whole group without numbers is a fact the operator must be
//! told once and plainly (readiness, the page's banner, the refund list),
//! since every refund row must then be identified by name, alias and id.
//! The verdict comes from a member list read to its end: numbering is off
//! when it held members and none of them had a number; any member seen with
//! a number turns it on.

use std::sync::atomic::{AtomicU8, Ordering};

use serde::Serialize;

use crate::domain::Member;
use crate::upstream::MemberWalk;

/// What this process knows of the group's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberingState {
    /// No member list was read to its end, and no numbered member was seen.
    Unknown,
    /// Members carry numbers (some may still lack one).
    On,
    /// A whole member list held no number at all.
    Off,
}

impl NumberingState {
    /// The operator's notice when numbering is off.
    pub fn notice(self) -> Option<&'static str> {
        (self == Self::Off).then_some(
            "本星球没有成员编号（未开启成员编号），名单按昵称、备注和用户 ID 区分成员 \
             (this group has no member numbers; rows are identified by nickname, alias and user id)",
        )
    }
}

/// 0 until something is known (unknown), then [`ON`] or [`OFF`].
#[derive(Debug, Default)]
pub struct Numbering(AtomicU8);

const ON: u8 = 1;
const OFF: u8 = 2;

impl Numbering {
    pub fn state(&self) -> NumberingState {
        match self.0.load(Ordering::Relaxed) {
            ON => NumberingState::On,
            OFF => NumberingState::Off,
            _ => NumberingState::Unknown,
        }
    }

    /// Members seen anywhere: one with a number proves numbering is on.
    pub fn observe(&self, members: &[Member]) {
        if members.iter().any(|m| m.number.is_some()) {
            self.0.store(ON, Ordering::Relaxed);
        }
    }

    /// A member list walk that ended: members but no number means off.
    pub fn observe_listing(&self, walk: &MemberWalk<'_>) {
        if walk.members() == 0 {
            return;
        }
        let state = if walk.numbered() == 0 { OFF } else { ON };
        self.0.store(state, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CachedMember;

    #[test]
    fn one_numbered_member_turns_numbering_on() {
        let n = Numbering::default();
        assert_eq!(n.state(), NumberingState::Unknown);
        let mut m = CachedMember::for_test(1, 3, 0).member;
        m.number = None;
        n.observe(std::slice::from_ref(&m));
        assert_eq!(
            n.state(),
            NumberingState::Unknown,
            "one member without a number proves nothing"
        );
        m.number = crate::domain::MemberNumber::new(3);
        n.observe(&[m]);
        assert_eq!(n.state(), NumberingState::On);
        assert!(NumberingState::On.notice().is_none());
        assert!(NumberingState::Off.notice().is_some());
    }
}
