//! [`ApiKey`]: who may call the service (`--api-key`).
//!
//! With a key set, every route that reads or runs the model (the embedding routes, `/info`,
//! `/tokenize`, `/decode`) needs `Authorization: Bearer <key>`; the health probes, `/metrics`
//! and `/openapi.json` stay open, as text-embeddings-inference keeps its health and metrics
//! routes open (Kubernetes probes and Prometheus scrapers carry no key; restrict them by
//! network policy). The presented key is compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;

/// The key clients must present.
///
/// ```
/// use corestream_serve::service::ApiKey;
///
/// let key = ApiKey::new("s3cret").unwrap();
/// assert!(key.accepts(Some(b"Bearer s3cret")));
/// assert!(key.accepts(Some(b"bearer   s3cret"))); // the scheme is case-insensitive
/// assert!(!key.accepts(Some(b"Bearer s3cre")));
/// assert!(!key.accepts(Some(b"s3cret"))); // no scheme
/// assert!(!key.accepts(None));
/// assert!(ApiKey::new("").is_none()); // an empty key would let anyone in
/// ```
#[derive(Clone)]
pub struct ApiKey(Box<[u8]>);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

impl ApiKey {
    /// `key`, unless it is empty or only whitespace (`None`).
    pub fn new(key: &str) -> Option<ApiKey> {
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(key.as_bytes().into()))
    }

    /// Whether an `Authorization` header value (`None`: none sent) carries the key as a
    /// Bearer token (RFC 6750: the scheme case-insensitive, then one or more spaces).
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some((scheme, token)) = value.split_at_checked(6) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") || token.first() != Some(&b' ') {
            return false;
        }
        let start = token.iter().position(|&b| b != b' ').unwrap_or(token.len());
        let token = token[start..].trim_ascii_end();
        // Equal lengths are compared in constant time; only the length can be learned from
        // the time a refusal takes.
        bool::from(token.ct_eq(&self.0))
    }
}
