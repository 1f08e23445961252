//! The check-in camps: the list by scope, a camp's ranking pages and its
//! statistics.

use super::*;

/// An optional time bound in the upstream's format; anything unreadable is
/// a bad parameter.
pub(super) fn time_param(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<Option<i64>, Failure> {
    match query.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(raw) => zsxq_domain::parse_zsxq_time_ms(raw)
            .map(Some)
            .ok_or_else(|| Failure::bad_param(name)),
    }
}

pub(super) fn camp_json(camp: &SimCamp) -> Value {
    let joined = camp.joined_count();
    json!({
        "checkin_id": camp.checkin_id,
        "title": camp.title,
        "text": camp.text,
        "checkin_days": camp.checkin_days,
        "status": camp.status.as_str(),
        "type": "accumulated",
        "joined_count": joined,
        "create_time": camp.create_time,
        "validity": {
            "long_period": camp.long_period,
            "expiration_time": camp.expiration_time,
        },
        "statistics": {
            "joined_count": joined,
            "completed_count": camp.completed_count(),
        },
    })
}

pub(super) async fn checkins(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: QueryParams,
) -> Result<Success, Failure> {
    admit(&state, CallKind::Checkins, &headers, &uri, path).await?;
    let query = query_of(query)?;
    let scope = query
        .get("scope")
        .and_then(|s| CampScope::parse(s))
        .ok_or_else(|| Failure::bad_param("scope"))?;
    let count = count_param(&query)?;
    let camps: Vec<Value> = state
        .data
        .camps_in(scope)
        .into_iter()
        .take(count)
        .map(camp_json)
        .collect();
    Ok(Success(json!({"checkins": camps})))
}

/// The `user` object of a ranking row.
pub(super) fn ranking_user_json(state: &SimState, user_id: u64) -> Value {
    match state.data.member_by_id(user_id) {
        Some(m) => json!({
            "user_id": m.user_id,
            "name": m.name,
            "alias": m.alias,
            "avatar_url": m.avatar_url,
        }),
        None => {
            let name = state
                .data
                .departed_by_id(user_id)
                .map(|d| d.name.as_str())
                .unwrap_or("");
            json!({"user_id": user_id, "name": name, "alias": "", "avatar_url": ""})
        }
    }
}

pub(super) async fn ranking_list(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    query: QueryParams,
) -> Result<Success, Failure> {
    let cid = admit(&state, CallKind::Ranking, &headers, &uri, path).await?;
    let cid: u64 = cid.parse().map_err(|_| Failure::bad_param("checkin_id"))?;
    let query = query_of(query)?;
    let kind = match query.get("type").map(String::as_str) {
        None | Some("") => RankingType::Accumulated,
        Some(raw) => RankingType::parse(raw).ok_or_else(|| Failure::bad_param("type"))?,
    };
    let index = u64_param(&query, "index")?.unwrap_or(0);
    let mut rows = state
        .data
        .expected_ranking_of(cid, kind)
        .ok_or_else(Failure::checkin_not_found)?;
    if state.hide_participant() && !rows.is_empty() {
        // One participant the list does not show: its page is one row
        // short and positions skip it, while the statistics count it.
        let hidden = HIDDEN_POSITION.min(rows.len() - 1);
        rows[hidden].0 = 0;
    }
    // `rankings` is the 1-based position; `index=N` continues after position N.
    let page: Vec<Value> = rows
        .iter()
        .enumerate()
        .skip(usize::try_from(index).unwrap_or(usize::MAX))
        .take(RANKING_PAGE_SIZE)
        .filter(|(_, (user_id, _))| *user_id != 0)
        .map(|(position, &(user_id, days))| {
            json!({
                "user": ranking_user_json(&state, user_id),
                "rankings": position + 1,
                "checkined_days": days,
            })
        })
        .collect();
    let mut resp = Map::new();
    resp.insert("ranking_list".into(), Value::Array(page));
    if index == 0 {
        // The caller's own row; the caller never takes part, so it is not a
        // ranking row and has no position.
        resp.insert(
            "user_specific".into(),
            json!({
                "user": ranking_user_json(&state, state.data.caller_user_id),
                "rankings": 0,
                "checkined_days": 0,
            }),
        );
    }
    Ok(Success(Value::Object(resp)))
}

/// `GET /v2/groups/{gid}/checkins/{cid}/statistics`: the camp's counts, as
/// in the public capture: `checkined_count` counts check-ins (the days of
/// every participant added up), not people; a few avatars of the top of the
/// ranking beside.
pub(super) async fn checkin_statistics(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Success, Failure> {
    let cid = admit(&state, CallKind::Statistics, &headers, &uri, path).await?;
    let cid: u64 = cid.parse().map_err(|_| Failure::bad_param("checkin_id"))?;
    let camp = state
        .data
        .camp(cid)
        .ok_or_else(Failure::checkin_not_found)?;
    let top: Vec<Value> = state
        .data
        .expected_ranking(cid)
        .unwrap_or_default()
        .iter()
        .take(3)
        .map(|&(user_id, _)| ranking_user_json(&state, user_id))
        .collect();
    Ok(Success(json!({"statistics": {
        "joined_count": camp.joined_count(),
        "completed_count": camp.completed_count(),
        "checkined_count": camp.checkins(),
        "ranking_list": top,
    }})))
}
