//! The fault layer around the `/v2` routes: the handler answers as usual,
//! then the configured [`SimFault`] spoils or holds back the answer.

use super::*;

/// Largest answer the fault layer reads back to spoil; real ones are a few
/// kilobytes (a member-list page of 200 is the biggest).
pub(super) const SPOIL_READ_LIMIT: usize = 4 * 1024 * 1024;

/// Applies the configured [`SimFault`] to a `/v2` answer.
pub(super) async fn spoil(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/v2/") {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    match state.fault() {
        SimFault::None => response,
        SimFault::Slow => {
            tokio::time::sleep(Duration::from_millis(state.slow_ms())).await;
            response
        }
        SimFault::Http500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error: upstream worker crashed",
        )
            .into_response(),
        SimFault::Garbage => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
        )
            .into_response(),
        SimFault::Truncated => {
            let body = answer_bytes(response).await;
            let cut = body.len() / 2;
            json_body(body.slice(..cut))
        }
        SimFault::Huge => huge_body(true),
        SimFault::HugeChunked => huge_body(false),
        SimFault::MissingFields => {
            let body = answer_bytes(response).await;
            match serde_json::from_slice::<Value>(&body) {
                Ok(mut value) => {
                    strip_fields(&mut value);
                    Json(value).into_response()
                }
                Err(_) => json_body(body),
            }
        }
    }
}

/// Bytes of the [`SimFault::Huge`] answers.
pub const HUGE_BODY_BYTES: usize = 100 << 20;

/// A JSON-looking answer of [`HUGE_BODY_BYTES`], streamed from one static
/// block so the simulator itself holds 64 KiB of it at most; with its
/// Content-Length or chunked.
pub(super) fn huge_body(with_length: bool) -> Response {
    const BLOCK: usize = 64 * 1024;
    static PAD: [u8; BLOCK] = [b' '; BLOCK];
    const HEAD: &[u8] = br#"{"succeeded":true,"resp_data":{"pad":""#;
    let blocks = (HUGE_BODY_BYTES - HEAD.len()).div_ceil(BLOCK);
    let tail = HUGE_BODY_BYTES - HEAD.len() - (blocks - 1) * BLOCK;
    let chunks =
        std::iter::once(axum::body::Bytes::from_static(HEAD)).chain((0..blocks).map(move |i| {
            let n = if i + 1 == blocks { tail } else { BLOCK };
            axum::body::Bytes::from_static(&PAD[..n])
        }));
    let stream = futures_util::stream::iter(chunks.map(Ok::<_, std::convert::Infallible>));
    let mut response = (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response();
    if with_length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HUGE_BODY_BYTES.into());
    }
    response
}

pub(super) async fn answer_bytes(response: Response) -> axum::body::Bytes {
    axum::body::to_bytes(response.into_body(), SPOIL_READ_LIMIT)
        .await
        .unwrap_or_default()
}

pub(super) fn json_body(bytes: axum::body::Bytes) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(bytes),
    )
        .into_response()
}

/// Removes what a client cannot do without from a success envelope: every
/// member's `number`, the camp list and the ranking rows.
pub(super) fn strip_fields(envelope: &mut Value) {
    let Some(data) = envelope.get_mut("resp_data").and_then(Value::as_object_mut) else {
        return;
    };
    // `user_id` is what no member record can do without (a missing
    // `number` is valid: the group may not number its members).
    if let Some(member) = data.get_mut("member").and_then(Value::as_object_mut) {
        member.remove("user_id");
    }
    if let Some(members) = data.get_mut("members").and_then(Value::as_array_mut) {
        for member in members.iter_mut().filter_map(Value::as_object_mut) {
            member.remove("user_id");
        }
    }
    data.remove("checkins");
    data.remove("ranking_list");
    data.remove("statistics");
}
