//! The generated group itself: reproducible from its seed, with the
//! awkward cases (gaps, no unique id, markup names, ties) a client must
//! handle.

use super::*;

#[test]
fn the_same_seed_generates_the_same_group() {
    let a = generate(7, 300, GROUP);
    let b = generate(7, 300, GROUP);
    assert_eq!(a.members, b.members);
    assert_eq!(a.camps, b.camps);
    assert_eq!(a.caller_user_id, b.caller_user_id);
}

#[test]
fn different_seeds_generate_different_members() {
    let a = generate(1, 50, GROUP);
    let b = generate(2, 50, GROUP);
    assert_ne!(a.members, b.members);
}

#[test]
fn user_ids_are_large_unique_and_not_ordered_like_numbers() {
    let data = generate(42, 500, GROUP);
    let ids: Vec<u64> = data.members.iter().map(|m| m.user_id).collect();
    assert!(ids.iter().all(|&id| id > u64::from(u32::MAX)));
    assert!(
        ids.iter()
            .all(|id| (12..=15).contains(&id.to_string().len()))
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    assert!(
        ids.windows(2).any(|w| w[0] > w[1]),
        "ids must not follow numbers"
    );
}

#[test]
fn numbers_start_at_one_and_increase_with_some_gaps() {
    let data = generate(42, 500, GROUP);
    let numbers: Vec<u64> = data.members.iter().map(|m| m.number).collect();
    assert_eq!(numbers[0], 1);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    assert!(
        numbers.windows(2).any(|w| w[1] - w[0] > 1),
        "someone must have left"
    );
}

#[test]
fn about_a_third_of_members_have_no_unique_id() {
    let data = generate(42, 500, GROUP);
    let missing = data
        .members
        .iter()
        .filter(|m| m.unique_id.is_none())
        .count();
    assert!(
        (100..=230).contains(&missing),
        "{missing} of 500 without unique_id"
    );
}

#[test]
fn names_include_chinese_emoji_markup_quotes_and_plain_ascii() {
    let data = generate(42, 500, GROUP);
    let names: Vec<&str> = data.members.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"🐱猫猫"));
    assert!(names.iter().any(|n| n.contains("<b>")));
    assert!(names.iter().any(|n| n.contains('"')));
    assert!(names.iter().any(|n| n.contains('\'')));
    assert!(names.iter().any(|n| n.is_ascii()));
    assert!(
        names
            .iter()
            .any(|n| n.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)))
    );
    assert!(data.members.iter().any(|m| m.alias.is_empty()));
    assert!(data.members.iter().any(|m| !m.alias.is_empty()));
    assert!(data.members.iter().any(|m| m.introduction.is_empty()));
}

#[test]
fn join_times_use_the_upstream_format_and_never_decrease_with_number() {
    let data = generate(42, 500, GROUP);
    let mut previous = i64::MIN;
    let mut shared = 0;
    for m in &data.members {
        assert!(m.join_time.ends_with("+0800"), "{}", m.join_time);
        assert_eq!(m.join_time.len(), "2024-09-04T22:39:05.287+0800".len());
        let joined = zsxq_domain::parse_zsxq_time_ms(&m.join_time).expect("parses");
        assert_eq!(joined, m.join_time_ms);
        assert!(joined >= previous);
        shared += usize::from(joined == previous);
        previous = joined;
        let expires = zsxq_domain::parse_zsxq_time_ms(&m.expired_time).expect("parses");
        assert_eq!(expires - joined, 365 * 24 * 3600 * 1000);
        assert_eq!(m.status, "joined");
    }
    assert_eq!(
        shared,
        500 / crate::data::SHARED_JOIN_EVERY,
        "some members share a millisecond"
    );
}

#[test]
fn the_first_over_camp_has_167_participants_with_ties_and_both_outcomes() {
    let data = generate(42, 500, GROUP);
    let camp = data.benchmark_camp().expect("an over camp");
    assert_eq!(camp.status, CampScope::Over);
    assert_eq!(
        data.camps_in(CampScope::Over)[0].checkin_id,
        camp.checkin_id
    );
    assert_eq!(camp.participants.len(), BENCHMARK_PARTICIPANTS);
    assert_eq!(camp.checkin_days, BENCHMARK_CHECKIN_DAYS);
    let ids: HashSet<u64> = camp.participants.iter().map(|p| p.0).collect();
    assert_eq!(
        ids.len(),
        BENCHMARK_PARTICIPANTS,
        "participants are distinct"
    );
    assert!(ids.iter().all(|&id| data.member_by_id(id).is_some()));
    assert!(!ids.contains(&data.caller_user_id));
    let days: Vec<u32> = camp.participants.iter().map(|p| p.1).collect();
    assert!(days.iter().any(|&d| d >= 7) && days.iter().any(|&d| d < 7));
    assert!(
        days.iter().all(|&d| d >= 1) && days.iter().any(|&d| d > 7),
        "the ranking's participants checked in at least once"
    );
    assert_eq!(camp.never_checked_in, BENCHMARK_PARTICIPANTS / 10);
    assert_eq!(
        camp.joined_count(),
        BENCHMARK_PARTICIPANTS + BENCHMARK_PARTICIPANTS / 10
    );
    let distinct: HashSet<u32> = days.iter().copied().collect();
    assert!(distinct.len() <= 11, "ties are common");
}

#[test]
fn every_scope_has_at_least_two_camps_with_large_distinct_ids() {
    let data = generate(42, 500, GROUP);
    for scope in CampScope::ALL {
        assert!(data.camps_in(scope).len() >= 2, "{scope:?}");
    }
    let ids: HashSet<u64> = data.camps.iter().map(|c| c.checkin_id).collect();
    assert_eq!(ids.len(), data.camps.len());
    assert!(ids.iter().all(|&id| id > u64::from(u32::MAX)));
}

#[test]
fn expected_ranking_sorts_by_days_and_keeps_join_order_for_ties() {
    let data = generate(42, 500, GROUP);
    let camp = data.benchmark_camp().expect("an over camp");
    let ranking = data.expected_ranking(camp.checkin_id).expect("known camp");
    assert_eq!(ranking.len(), camp.participants.len());
    assert!(ranking.windows(2).all(|w| w[0].1 >= w[1].1));
    let join_position = |id: u64| camp.participants.iter().position(|p| p.0 == id);
    for w in ranking.windows(2).filter(|w| w[0].1 == w[1].1) {
        assert!(join_position(w[0].0) < join_position(w[1].0));
    }
    assert_eq!(data.expected_ranking(1), None);
}

#[test]
fn small_groups_still_generate_consistent_data() {
    let empty = generate(3, 0, GROUP);
    assert!(empty.members.is_empty());
    assert!(empty.camps.iter().all(|c| c.participants.is_empty()));
    let tiny = generate(3, 5, GROUP);
    let camp = tiny.benchmark_camp().expect("an over camp");
    assert_eq!(camp.participants.len(), 4, "everyone but the caller");
    assert!(camp.participants.iter().all(|p| p.0 != tiny.caller_user_id));
}

#[test]
fn members_can_be_found_by_id_and_by_number() {
    let data = generate(42, 200, GROUP);
    for m in &data.members {
        assert_eq!(data.member_by_id(m.user_id), Some(m));
        assert_eq!(data.member_by_number(m.number), Some(m));
    }
    assert_eq!(data.member_by_id(1), None);
    assert_eq!(data.member_by_number(0), None);
}
