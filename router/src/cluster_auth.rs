//! Authentication among Photon's own processes (head, proxies, replicas), so that only they can
//! call the internal ports: the controller's gRPC service, each replica's control service and
//! each replica's data port.
//!
//! - Every process of one instance holds the instance's **cluster token**, handed down in the
//!   environment (`PHOTON_CLUSTER_TOKEN`, never the command line). It travels as the
//!   `x-photon-cluster-token` header on every internal gRPC call and every request to a data
//!   port, and the servers refuse a call without it (in time independent of where it differs).
//!   A process without a token refuses every call: there is no open mode.
//! - The head also gives each replica it starts a **registration secret** of its own (an HMAC
//!   of the replica id under a key only the head holds, `PHOTON_REPLICA_SECRET`), which the
//!   registration must carry: a process that has the cluster token (any replica) still cannot
//!   register as another replica and receive its traffic.
//!
//! Front doors remove every `x-photon-*` header a client sends (`wire::strip_internal`), so a
//! client can neither present nor learn these values; replicas remove the token header before
//! the deployment sees a request.

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use photon_proto::v1::controller_service_client::ControllerServiceClient;
use sha2::Sha256;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The environment variable that hands the cluster token to a process.
pub const TOKEN_ENV: &str = "PHOTON_CLUSTER_TOKEN";
/// The environment variable that hands a replica its registration secret.
pub const REPLICA_SECRET_ENV: &str = "PHOTON_REPLICA_SECRET";
/// The gRPC metadata key carrying the cluster token.
pub const TOKEN_KEY: &str = "x-photon-cluster-token";
/// The header carrying the cluster token to a data port.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static(TOKEN_KEY);
/// The gRPC metadata key carrying a replica's registration secret.
pub const REPLICA_SECRET_HEADER: &str = "x-photon-replica-secret";

static TOKEN: OnceLock<HeaderValue> = OnceLock::new();

/// Why a token could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ClusterAuthError {
    /// No token in the environment of a process that needs one.
    #[error("{TOKEN_ENV} is not set: Photon's processes authenticate to each other with the head's cluster token (set the same {TOKEN_ENV} for `photon start` and this process)")]
    Missing,
    /// The token cannot travel in a header.
    #[error("{TOKEN_ENV} must be visible ASCII (it travels in a header)")]
    Malformed,
    /// The kernel's random source failed.
    #[error("cannot read random bytes for a token: {0}")]
    Random(std::io::Error),
}

/// Makes `token` this process's cluster token. The first call wins; a later one with another
/// token is ignored (a process belongs to one instance).
pub fn install(token: &str) -> Result<(), ClusterAuthError> {
    let value = HeaderValue::from_str(token.trim()).map_err(|_| ClusterAuthError::Malformed)?;
    if value.is_empty() {
        return Err(ClusterAuthError::Missing);
    }
    let _ = TOKEN.set(value);
    Ok(())
}

/// The token `PHOTON_CLUSTER_TOKEN` sets, if any.
pub fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// Installs the token from the environment: what a replica or a standalone proxy does first.
pub fn install_from_env() -> Result<(), ClusterAuthError> {
    install(&token_from_env().ok_or(ClusterAuthError::Missing)?)
}

/// This process's cluster token, once installed.
pub fn token() -> Option<&'static str> {
    TOKEN.get().and_then(|v| v.to_str().ok())
}

/// 256 random bits from the kernel, as hex: a new cluster token or registration key.
pub fn random_token() -> Result<String, ClusterAuthError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(ClusterAuthError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares in time that depends on the length only, not on where the bytes differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `presented` is this process's cluster token (never, when it has none).
pub fn is_token(presented: Option<&[u8]>) -> bool {
    match (TOKEN.get(), presented) {
        (Some(token), Some(given)) => same(token.as_bytes(), given),
        _ => false,
    }
}

/// Adds the cluster token to outgoing headers (a request to a replica's data port).
pub fn attach(headers: &mut HeaderMap) {
    if let Some(token) = TOKEN.get() {
        headers.insert(TOKEN_HEADER, token.clone());
    }
}

/// Checks and removes the cluster token of an incoming request to a data port.
pub fn take(headers: &mut HeaderMap) -> bool {
    is_token(headers.remove(TOKEN_HEADER).as_ref().map(HeaderValue::as_bytes))
}

/// The registration secret of `replica_id` under the head's `key` (HMAC-SHA256, hex).
pub fn registration_secret(key: &str, replica_id: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(replica_id.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A tonic interceptor that adds the cluster token to every call of a client.
#[derive(Clone, Copy, Default)]
pub struct AttachToken;

impl tonic::service::Interceptor for AttachToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = token() {
            if let Ok(value) = token.parse() {
                request.metadata_mut().insert(TOKEN_KEY, value);
            }
        }
        Ok(request)
    }
}

/// A tonic server interceptor: the call goes on only with this process's cluster token.
pub fn require_token(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let presented = request.metadata().get(TOKEN_KEY).map(|v| v.as_bytes());
    if is_token(presented) {
        Ok(request)
    } else {
        Err(tonic::Status::unauthenticated("missing or wrong Photon cluster token"))
    }
}

/// A client of the controller's internal service that presents the cluster token.
pub type ControllerClient = ControllerServiceClient<InterceptedService<Channel, AttachToken>>;

/// Connects to the controller at `url` (`http://HOST:PORT`).
pub async fn controller_client(url: &str) -> Result<ControllerClient, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?.connect().await?;
    Ok(ControllerServiceClient::with_interceptor(channel, AttachToken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_secrets_differ_per_replica_and_per_key() {
        let a = registration_secret("key-1", "replica-a");
        assert_eq!(a.len(), 64);
        assert_eq!(a, registration_secret("key-1", "replica-a"));
        assert_ne!(a, registration_secret("key-1", "replica-b"));
        assert_ne!(a, registration_secret("key-2", "replica-a"));
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }

    #[test]
    fn random_tokens_are_256_bits_of_hex() {
        let t = random_token().unwrap();
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(t, random_token().unwrap());
    }
}
