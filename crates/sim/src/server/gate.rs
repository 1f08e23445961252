//! What every `/v2` call passes before its real work, in upstream's order:
//! counted, delayed, throttled, authenticated, signed, from a known device
//! and a recent enough client.

use super::*;

/// What every `/v2` call goes through before its real work.
pub(super) async fn gate(
    state: &SimState,
    kind: CallKind,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(), Failure> {
    state.count_call(kind);
    let latency = state.latency_ms();
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if state.banned() {
        return Err(Failure::banned());
    }
    let verdict = checks(state, headers, uri);
    state.note_answer(verdict.as_ref().is_err_and(|f| f.code == 1059));
    verdict
}

/// The checks of [`gate`] after the ban: throttle, token, signature,
/// device, version.
pub(super) fn checks(state: &SimState, headers: &HeaderMap, uri: &Uri) -> Result<(), Failure> {
    state.admit().map_err(|why| {
        tracing::debug!(?why, path = uri.path(), "sim: throttled a call");
        Failure::throttled(why)
    })?;
    if !authenticated(state, headers) {
        return Err(Failure::unauthenticated());
    }
    check_signature(state, headers, uri)?;
    check_device(state, headers)?;
    check_version(state, headers)
}

/// Oldest `X-Version` served. No public capture shows where upstream draws
/// the line; app captures of 2.82.0 and 2.83.0 were served, so anything
/// older than 2.80.0 is "too old" here (`docs/UPSTREAM.md`).
pub const MIN_X_VERSION: (u32, u32, u32) = (2, 80, 0);

/// `X-Version` must be `d.d.d` and at least [`MIN_X_VERSION`]; a missing one
/// is too old as well, unless headers are lenient.
pub(super) fn check_version(state: &SimState, headers: &HeaderMap) -> Result<(), Failure> {
    let Some(raw) = headers.get("x-version") else {
        return if state.lenient_headers {
            Ok(())
        } else {
            Err(Failure::version_too_old())
        };
    };
    let parsed: Option<Vec<u32>> = raw
        .to_str()
        .ok()
        .map(|v| v.split('.').map(|p| p.parse().ok()).collect())
        .and_then(|parts: Option<Vec<u32>>| parts.filter(|p| p.len() == 3));
    match parsed {
        Some(p) if (p[0], p[1], p[2]) >= MIN_X_VERSION => Ok(()),
        _ => Err(Failure::version_too_old()),
    }
}

/// `X-Aduid` must be present and the same device on every call (the first
/// one seen is remembered); upstream answers anything else with 1059
/// "设备状态异常".
pub(super) fn check_device(state: &SimState, headers: &HeaderMap) -> Result<(), Failure> {
    match headers.get("x-aduid").and_then(|v| v.to_str().ok()) {
        None | Some("") if state.lenient_headers => Ok(()),
        Some(aduid) if !aduid.is_empty() && state.same_device(aduid) => Ok(()),
        _ => Err(Failure::bad_device()),
    }
}

/// Accepts the token as `Authorization: <token>` or as the
/// `zsxq_access_token` cookie, like the app and the web client.
pub(super) fn authenticated(state: &SimState, headers: &HeaderMap) -> bool {
    let from_header = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("zsxq_access_token="));
    from_header
        .chain(from_cookie)
        .any(|t| state.token_matches(t))
}

/// `X-Signature` must be the lower-hex SHA-1 of
/// `"http://" + Host + path_and_query + " " + X-Timestamp + " " + X-Request-Id`.
/// Upstream answers a wrong or missing one with the anti-abuse code 1059
/// (a missing one passes only with lenient headers).
pub(super) fn check_signature(
    state: &SimState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(), Failure> {
    let Some(signature) = headers.get("x-signature") else {
        return if state.lenient_headers {
            Ok(())
        } else {
            Err(Failure::bad_signature())
        };
    };
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let host = text(header::HOST.as_str());
    let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let signed = format!(
        "http://{host}{path_and_query} {} {}",
        text("x-timestamp"),
        text("x-request-id")
    );
    let expected = sha1_smol::Sha1::from(signed).digest().to_string();
    if signature.as_bytes() == expected.as_bytes() {
        Ok(())
    } else {
        Err(Failure::bad_signature())
    }
}

/// Passes the call through the [`gate`], then reads its path: the group,
/// which must be the simulated one, and the item after it when the route
/// has one. An unreadable path is a bad parameter, as upstream answers it.
pub(super) async fn admit<P: GroupPath>(
    state: &SimState,
    kind: CallKind,
    headers: &HeaderMap,
    uri: &Uri,
    path: Result<Path<P>, PathRejection>,
) -> Result<P::Item, Failure> {
    gate(state, kind, headers, uri).await?;
    let Path(path) = path.map_err(|_| Failure::bad_param("path"))?;
    let (gid, item) = path.split();
    check_group(state, &gid)?;
    Ok(item)
}

/// A `/v2/groups/{gid}/…` path: the group and what follows it.
pub(super) trait GroupPath {
    type Item;
    fn split(self) -> (String, Self::Item);
}

impl GroupPath for String {
    type Item = ();
    fn split(self) -> (String, ()) {
        (self, ())
    }
}

impl GroupPath for (String, String) {
    type Item = String;
    fn split(self) -> (String, String) {
        self
    }
}

/// The query string's values; an unreadable one is a bad parameter.
pub(super) fn query_of(query: QueryParams) -> Result<HashMap<String, String>, Failure> {
    query
        .map(|Query(query)| query)
        .map_err(|_| Failure::bad_param("query"))
}

/// The group in the path must be the simulated one.
fn check_group(state: &SimState, raw: &str) -> Result<(), Failure> {
    let gid: u64 = raw.parse().map_err(|_| Failure::bad_param("group_id"))?;
    if gid == state.data.group_id {
        Ok(())
    } else {
        Err(Failure::group_not_found())
    }
}
