//! Reading a request body with a size bound and a time bound.
//!
//! A client that announces a body and then goes silent would otherwise hold a connection and a
//! task forever; one that sends more than a request can need would hold memory. Both are
//! answered with an error the caller can act on (413, 408) in the service's own error shape,
//! rather than axum's plain-text rejection.

use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// How long a body may take to arrive once the headers are in (between chunks, and in all).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the body is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the body did not arrive within {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error("the body could not be read: {0}")]
    Broken(String),
}

impl BodyError {
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// The whole body, if it is at most `max` bytes and arrives within [`BODY_TIMEOUT`].
pub async fn read(body: Body, max: usize) -> Result<Bytes, BodyError> {
    read_within(body, max, BODY_TIMEOUT).await
}

/// A JSON request body, as every JSON API takes one: a JSON media type (else 415), at most `max`
/// bytes in time (else 413, 408), parsed as `T` (else 400 with serde's reason).
pub async fn json<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: Body,
    max: usize,
) -> Result<T, crate::ApiError> {
    crate::require_json(headers)?;
    let bytes = read(body, max)
        .await
        .map_err(|e| crate::ApiError::new(e.status(), "bad_request", e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| crate::ApiError::bad_request(e.to_string()))
}

pub async fn read_within(body: Body, max: usize, limit: Duration) -> Result<Bytes, BodyError> {
    let collected = tokio::time::timeout(limit, Limited::new(body, max).collect()).await;
    match collected {
        Err(_) => Err(BodyError::TimedOut(limit)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge { max }),
        Ok(Err(e)) => Err(BodyError::Broken(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A body whose sender announced it and then went silent.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_over_the_bound_or_one_that_never_comes_is_refused() {
        assert_eq!(
            read(Body::from("hello"), 16).await.unwrap(),
            Bytes::from("hello")
        );
        assert_eq!(
            read(Body::from(vec![0u8; 17]), 16).await,
            Err(BodyError::TooLarge { max: 16 })
        );
        let refused = read_within(Body::new(Silent), 16, Duration::from_millis(50)).await;
        assert_eq!(refused, Err(BodyError::TimedOut(Duration::from_millis(50))));
    }
}
