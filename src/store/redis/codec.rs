//! How a member record is laid out as a Redis hash: every value a string,
//! so `redis-cli HGETALL` reads naturally, and long values cut into
//! listpack-sized pieces so the hash keeps Redis's compact encoding.

use std::collections::HashMap;

use crate::domain::{CachedMember, Member, MemberNumber, UserId};
use crate::store::{StoreError, keys};

/// Longest value Redis keeps in a compact (listpack) hash with its default
/// `hash-max-listpack-value`. One longer value turns the whole hash into a
/// hashtable, which costs more than twice the memory (measured: 1 076 B
/// instead of 456 B for a member with a 91-byte avatar URL).
pub const LISTPACK_VALUE_MAX: usize = 64;

/// Appends `name = value`, a value longer than [`LISTPACK_VALUE_MAX`] bytes
/// cut into pieces `name`, `name:2`, `name:3`, … at character boundaries, so
/// `HGETALL` still reads naturally and the hash stays a listpack.
fn push_field(out: &mut Vec<(String, String)>, name: &str, value: &str) {
    if value.len() <= LISTPACK_VALUE_MAX {
        out.push((name.to_owned(), value.to_owned()));
        return;
    }
    let mut start = 0;
    let mut piece = 1;
    let mut emit = |out: &mut Vec<(String, String)>, text: &str| {
        let field = if piece == 1 {
            name.to_owned()
        } else {
            format!("{name}:{piece}")
        };
        out.push((field, text.to_owned()));
        piece += 1;
    };
    for (i, c) in value.char_indices() {
        if i + c.len_utf8() - start > LISTPACK_VALUE_MAX {
            emit(out, &value[start..i]);
            start = i;
        }
    }
    emit(out, &value[start..]);
}

/// Takes a text field written by [`push_field`], joining its pieces.
fn take_text(fields: &mut HashMap<String, String>, name: &str) -> String {
    let mut value = fields.remove(name).unwrap_or_default();
    for piece in 2.. {
        match fields.remove(&format!("{name}:{piece}")) {
            Some(more) => value.push_str(&more),
            None => break,
        }
    }
    value
}

/// The hash fields, all as strings, in the order `redis-cli HGETALL` has
/// always shown them; long text values in pieces (see [`push_field`]).
pub(super) fn hash_fields(m: &CachedMember) -> Vec<(String, String)> {
    let member = &m.member;
    let mut out = Vec::with_capacity(14);
    out.push(("user_id".to_owned(), member.user_id.to_string()));
    let number = member.number.map(|n| n.to_string()).unwrap_or_default();
    out.push(("number".to_owned(), number));
    for (name, value) in [
        ("name", &member.name),
        ("unique_id", &member.unique_id),
        ("avatar_url", &member.avatar_url),
        ("join_time", &member.join_time),
        ("status", &member.status),
        ("expired_time", &member.expired_time),
        ("introduction", &member.introduction),
    ] {
        push_field(&mut out, name, value);
    }
    out.push(("cached_at".to_owned(), m.cached_at.to_string()));
    out.push(("updated_at".to_owned(), m.updated_at.to_string()));
    out
}

/// Rebuilds a record from its hash. Identity and bookkeeping fields must be
/// present and well-formed; descriptive strings default to empty, as the
/// upstream omits them freely.
pub(super) fn member_from_hash(
    id: UserId,
    mut fields: HashMap<String, String>,
) -> Result<CachedMember, StoreError> {
    let key = keys::user(id);
    let mut required = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| StoreError::Corrupt(format!("{key} lacks field {name}")))
    };
    let raw_id = required("user_id")?;
    let raw_number = required("number")?;
    let raw_cached_at = required("cached_at")?;
    let raw_updated_at = required("updated_at")?;
    let corrupt =
        |name: &str, raw: &str| StoreError::Corrupt(format!("{key} field {name} is {raw:?}"));

    let user_id = UserId::parse(&raw_id).map_err(|_| corrupt("user_id", &raw_id))?;
    if user_id != id {
        return Err(corrupt("user_id", &raw_id));
    }
    // "" is a member without a number, anything else must be one.
    let number = match raw_number.as_str() {
        "" => None,
        raw => Some(MemberNumber::parse(raw).map_err(|_| corrupt("number", raw))?),
    };
    let cached_at = raw_cached_at
        .parse()
        .map_err(|_| corrupt("cached_at", &raw_cached_at))?;
    let updated_at = raw_updated_at
        .parse()
        .map_err(|_| corrupt("updated_at", &raw_updated_at))?;
    let mut text = |name: &str| take_text(&mut fields, name);
    Ok(CachedMember {
        member: Member {
            user_id,
            number,
            name: text("name"),
            unique_id: text("unique_id"),
            avatar_url: text("avatar_url"),
            join_time: text("join_time"),
            status: text("status"),
            expired_time: text("expired_time"),
            introduction: text("introduction"),
        },
        cached_at,
        updated_at,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A member as the upstream reports one, shared by the store's tests.
    pub(crate) fn sample() -> CachedMember {
        CachedMember {
            member: Member {
                user_id: UserId::parse("454881884228").unwrap(),
                number: MemberNumber::parse("177").ok(),
                name: "青弦 🎯".into(),
                unique_id: String::new(),
                avatar_url: "https://images.zsxq.com/a.jpg".into(),
                join_time: "2024-09-04T22:39:05.287+0800".into(),
                status: "joined".into(),
                expired_time: "2026-09-04T22:39:05.287+0800".into(),
                introduction: "高级前端开发工程师".into(),
            },
            cached_at: 1_730_080_000_000,
            updated_at: 1_730_080_000_001,
        }
    }

    #[test]
    fn a_record_survives_the_trip_through_hash_fields() {
        let m = sample();
        let fields: HashMap<String, String> = hash_fields(&m).into_iter().collect();
        assert_eq!(member_from_hash(m.member.user_id, fields).unwrap(), m);
    }

    #[test]
    fn long_values_travel_in_listpack_sized_pieces_and_come_back_whole() {
        let mut m = sample();
        m.member.avatar_url = format!(
            "https://images.zsxq.com/F{}?imageMogr2/auto-orient/thumbnail/150x/format/jpg",
            "a1b2c3d4e5f60718"
        );
        m.member.introduction =
            "高级前端开发工程师，专注性能优化与工程化，业余跑马拉松 🏃".repeat(3);
        let fields = hash_fields(&m);
        assert!(fields.iter().all(|(_, v)| v.len() <= LISTPACK_VALUE_MAX));
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"avatar_url:2"), "{names:?}");
        assert!(names.contains(&"introduction:3"), "{names:?}");
        let map: HashMap<String, String> = fields.into_iter().collect();
        assert_eq!(member_from_hash(m.member.user_id, map).unwrap(), m);
    }

    #[test]
    fn a_hash_with_a_bad_number_or_foreign_id_is_corrupt() {
        let m = sample();
        let base: HashMap<String, String> = hash_fields(&m).into_iter().collect();

        let mut bad_number = base.clone();
        bad_number.insert("number".into(), "abc".into());
        assert!(matches!(
            member_from_hash(m.member.user_id, bad_number),
            Err(StoreError::Corrupt(_))
        ));

        let other = UserId::parse("1").unwrap();
        assert!(matches!(
            member_from_hash(other, base.clone()),
            Err(StoreError::Corrupt(_))
        ));

        let mut missing = base;
        missing.remove("cached_at");
        assert!(matches!(
            member_from_hash(m.member.user_id, missing),
            Err(StoreError::Corrupt(_))
        ));
    }
}
