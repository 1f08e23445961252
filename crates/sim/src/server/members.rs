//! The member endpoints: one member (summary or full) and the member list,
//! paged by join time or by number.

use super::*;

/// An optional numeric query parameter; empty counts as absent.
pub(super) fn u64_param(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<Option<u64>, Failure> {
    match query.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(raw) => raw.parse().map(Some).map_err(|_| Failure::bad_param(name)),
    }
}

/// `count=` within 1..=[`MAX_PAGE_COUNT`], defaulting to 20.
pub(super) fn count_param(query: &HashMap<String, String>) -> Result<usize, Failure> {
    let count = u64_param(query, "count")?.unwrap_or(DEFAULT_COUNT);
    if (1..=MAX_PAGE_COUNT).contains(&count) {
        usize::try_from(count).map_err(|_| Failure::bad_param("count"))
    } else {
        Err(Failure::bad_param("count"))
    }
}

pub(super) fn find_member<'a>(
    state: &'a SimState,
    raw_uid: &str,
) -> Result<&'a SimMember, Failure> {
    let uid: u64 = raw_uid.parse().map_err(|_| Failure::bad_param("user_id"))?;
    if state.data.departed_by_id(uid).is_some() {
        return Err(Failure::member_left());
    }
    state
        .data
        .member_by_id(uid)
        .ok_or_else(Failure::not_in_group)
}

/// The member fields every member endpoint shares; `unique_id` is left out
/// entirely when the member has none, as upstream does.
pub(super) fn member_json(m: &SimMember, group_id: Option<u64>) -> Value {
    let mut obj = Map::new();
    obj.insert("user_id".into(), Value::from(m.user_id));
    obj.insert("name".into(), Value::from(m.name.as_str()));
    obj.insert("avatar_url".into(), Value::from(m.avatar_url.as_str()));
    if m.has_number {
        obj.insert("number".into(), Value::from(m.number));
    }
    if let Some(unique_id) = &m.unique_id {
        obj.insert("unique_id".into(), Value::from(unique_id.as_str()));
    }
    obj.insert("join_time".into(), Value::from(m.join_time.as_str()));
    obj.insert("status".into(), Value::from(m.status.as_str()));
    obj.insert("expired_time".into(), Value::from(m.expired_time.as_str()));
    obj.insert("introduction".into(), Value::from(m.introduction.as_str()));
    if let Some(gid) = group_id {
        obj.insert("group_id".into(), Value::from(gid));
    }
    Value::Object(obj)
}

pub(super) async fn member_summary(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Success, Failure> {
    let uid = admit(&state, CallKind::MemberSummary, &headers, &uri, path).await?;
    let mut m = find_member(&state, &uid)?;
    if state.wrong_summary() {
        // A misbehaving upstream: the record of the next member instead.
        let members = &state.data.members;
        if let Some(i) = members.iter().position(|x| x.user_id == m.user_id) {
            m = &members[(i + 1) % members.len()];
        }
    }
    let joined_days = (chrono::Utc::now().timestamp_millis() - m.join_time_ms).max(0) / DAY_MS;
    Ok(Success(json!({
        "member": member_json(m, None),
        "joined_days": joined_days,
        "topics_count": m.topics_count,
    })))
}

pub(super) async fn member(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Success, Failure> {
    let uid = admit(&state, CallKind::Member, &headers, &uri, path).await?;
    let m = find_member(&state, &uid)?;
    Ok(Success(
        json!({"member": member_json(m, Some(state.data.group_id))}),
    ))
}

/// The documented member list: `count` 1..200; `scope` all (default),
/// privileged, privileged_and_volunteer, expired, trial, regular; `sort`
/// join_time (default), update_time, expired_time (only with regular or
/// expired scope), number (only with scope=expired); every other
/// combination answers an empty list, not an error. `order` desc (default)
/// or asc; `begin_time`/`end_time` bound the sorted time, inclusive;
/// `filter` joined, exited or `joined,exited` (default); `page_tag` only with
/// sort=number. The simulated group has no expired, trial or exited members,
/// and its owner is its only privileged one; `update_time` is taken to be
/// the join time.
pub(super) async fn member_list(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: QueryParams,
) -> Result<Success, Failure> {
    admit(&state, CallKind::MemberList, &headers, &uri, path).await?;
    if !state.member_list_allowed() {
        return Err(Failure::member_list_refused());
    }
    let query = query_of(query)?;
    let count = count_param(&query)?;
    let pick = |name: &str, allowed: &[&'static str]| -> Result<&'static str, Failure> {
        match query.get(name).map(|v| v.trim()) {
            None | Some("") => Ok(allowed[0]),
            Some(raw) => allowed
                .iter()
                .find(|a| **a == raw)
                .copied()
                .ok_or_else(|| Failure::bad_param(name)),
        }
    };
    let scope = pick(
        "scope",
        &[
            "all",
            "privileged",
            "privileged_and_volunteer",
            "expired",
            "trial",
            "regular",
        ],
    )?;
    let sort = pick(
        "sort",
        &["join_time", "update_time", "expired_time", "number"],
    )?;
    let descending = pick("order", &["desc", "asc"])? == "desc";
    // Documented as `joined`, `exited` or both comma-separated (the
    // default).
    let filter = pick(
        "filter",
        &["joined,exited", "joined", "exited", "exited,joined"],
    )?;
    let begin = time_param(&query, "begin_time")?;
    let end = time_param(&query, "end_time")?;
    u64_param(&query, "page_tag")?;
    let served = match (sort, scope) {
        ("number", s) if s != "expired" => false,
        ("expired_time", s) if s != "expired" && s != "regular" => false,
        _ => true,
    };
    let pool: &[SimMember] = match scope {
        _ if !served || filter == "exited" => &[],
        "all" | "regular" => &state.data.members,
        "privileged" | "privileged_and_volunteer" => {
            state.data.members.get(..1).unwrap_or_default()
        }
        _ => &[],
    };
    // Time of the sorted field; members are kept in join order, which is
    // also the order of these times (ties keep that order).
    let time_of = |m: &SimMember| match sort {
        "expired_time" => m.join_time_ms + 365 * DAY_MS,
        _ => m.join_time_ms,
    };
    let within = |m: &&SimMember| {
        let t = time_of(m);
        begin.is_none_or(|b| t >= b) && end.is_none_or(|e| t <= e)
    };
    let page: Vec<Value> = if descending {
        pool.iter()
            .rev()
            .filter(within)
            .take(count)
            .map(|m| member_json(m, None))
            .collect()
    } else {
        pool.iter()
            .filter(within)
            .take(count)
            .map(|m| member_json(m, None))
            .collect()
    };
    Ok(Success(json!({"members": page})))
}
