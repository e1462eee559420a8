//! Reading a review's body within `--max-body-bytes`, and the answer to one over it.

use axum::{
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

/// How much of an over-limit body is read (and thrown away) so that the client gets the 413:
/// an HTTP/2 stream whose body is left unread is reset, and an HTTP/1.1 connection closed, and
/// a client still sending may then never see the answer. Nothing of it is kept.
fn drain_limit(limit: usize) -> u64 {
    (limit as u64).saturating_mul(4).max(64 * 1024 * 1024)
}

pub(super) enum BodyError {
    /// Over the limit: `size` is the declared or counted size, when known.
    TooLarge {
        size: Option<u64>,
    },
    Unreadable,
}

/// Reads a body of at most `limit` bytes. A larger one is read to its end without being kept
/// (up to [`drain_limit`]), so that the 413 reaches the client; memory stays within `limit`.
pub(super) async fn read_body(
    body: Body,
    limit: usize,
    declared: Option<u64>,
) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt;

    let mut body = body;
    // Room for what the client says it sends, but not more than 1 MiB up front: a client that
    // declares a large body and sends nothing holds no memory for it.
    let mut kept = bytes::BytesMut::with_capacity(declared.map_or(0, |n| {
        usize::try_from(n).unwrap_or(limit).min(limit).min(1 << 20)
    }));
    let mut seen: u64 = 0;
    let over = declared.is_some_and(|n| n > limit as u64);
    if over && declared.is_some_and(|n| n > drain_limit(limit)) {
        // Not worth reading: answered from the headers.
        return Err(BodyError::TooLarge { size: declared });
    }
    let mut too_large = over;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(if too_large {
                BodyError::TooLarge { size: declared }
            } else {
                BodyError::Unreadable
            });
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen += data.len() as u64;
        if seen > limit as u64 {
            too_large = true;
        }
        if too_large {
            if seen > drain_limit(limit) {
                return Err(BodyError::TooLarge { size: None });
            }
            continue;
        }
        kept.extend_from_slice(&data);
    }
    if too_large {
        return Err(BodyError::TooLarge {
            size: declared.or(Some(seen)),
        });
    }
    Ok(kept.freeze())
}

/// The answer to an over-limit body: HTTP 413 with a `metav1.Status`. The API server's client
/// reads a non-2xx answer's body as a Status when it is one, and shows its message ("failed
/// calling webhook ...: <message>"); a body that is not a Status leaves it with only "the
/// server responded with the status code 413 but did not return more information". Which
/// review it was cannot be told without reading it, so this is not an AdmissionReview (whose
/// uid would have to match), and the webhook's failurePolicy decides, as for any failed call.
pub(super) fn too_large(limit: usize, size: Option<u64>) -> Response {
    let size = size.map_or_else(|| "larger".to_owned(), |n| format!("{n} bytes, larger"));
    let message = format!(
        "stsguard cannot review this object: the AdmissionReview is {size} than the webhook's \
         limit of {limit} bytes (--max-body-bytes, chart value maxBodyBytes). An UPDATE review \
         carries the object twice (object and oldObject); set the limit to at least twice the \
         API server's request body limit (3 MiB by default) plus 1 MiB"
    );
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "RequestEntityTooLarge",
        "code": 413,
    });
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONTENT_TYPE, "application/json")],
        status.to_string(),
    )
        .into_response()
}
