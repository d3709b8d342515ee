//! Push bodies: size limits, gzip and snappy, text format 0.0.4 or delimited protobuf.

use super::*;

/// Why a push body is not used.
pub(crate) enum BodyError {
    /// Too large, badly encoded or not the format at all: the Pushgateway records nothing.
    Unread(Response),
    /// Well-formed but refused content (timestamps, repeated series, reserved names, limits):
    /// recorded as a failed push, as the Pushgateway records it.
    Refused(Response),
}

impl From<Response> for BodyError {
    fn from(r: Response) -> Self {
        Self::Unread(r)
    }
}

#[allow(clippy::result_large_err)]
/// Reads a pushed body within the size limit, undoes its `Content-Encoding` (gzip, snappy) and
/// parses it as the text format or, by `Content-Type`, delimited protobuf; the error carries
/// the answer to send.
pub(crate) async fn push_body(
    inner: &Inner,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<Vec<textformat::ParsedFamily>, BodyError> {
    let (max_body, max_samples) = {
        let s = inner.settings;
        (s.max_body, s.max_group_series)
    };
    let bytes = to_bytes(body, max_body).await.map_err(|_| {
        text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {max_body} bytes"),
        )
    })?;
    let header = |name: axum::http::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let protobuf = protobuf::is_protobuf(content_type)
        .map_err(|e| text_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, e))?;
    // A compressed body may expand to at most ten times the body limit.
    let limit = (max_body as u64).saturating_mul(10);
    let inflate = |reader: &mut dyn std::io::Read, what: &str| {
        use std::io::Read;
        let mut out = Vec::new();
        reader
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| text_response(StatusCode::BAD_REQUEST, format!("bad {what} body: {e}")))?;
        if out.len() as u64 > limit {
            return Err(text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("decompressed body exceeds {limit} bytes"),
            ));
        }
        Ok(out)
    };
    let bytes = match header(axum::http::header::CONTENT_ENCODING).as_str() {
        "" | "identity" => bytes.to_vec(),
        "gzip" => inflate(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), "gzip")?,
        "snappy" => inflate(&mut snap::read::FrameDecoder::new(&bytes[..]), "snappy")?,
        other => {
            return Err(text_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {other:?}; use gzip, snappy or none"),
            )
            .into());
        }
    };
    let refusal = |reason: String, syntax: bool| {
        let r = text_response(StatusCode::BAD_REQUEST, reason);
        if syntax {
            BodyError::Unread(r)
        } else {
            BodyError::Refused(r)
        }
    };
    if protobuf {
        return protobuf::parse_limited(&bytes, max_samples)
            .map_err(|e| refusal(e.reason, e.syntax));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| text_response(StatusCode::BAD_REQUEST, "body is not UTF-8 text"))?;
    textformat::parse_limited(&text, max_samples).map_err(|e| refusal(e.to_string(), e.syntax))
}
