//! Who may call the REST API: Ray 2.60's token authentication, with Ray's variables, sources,
//! headers and answers, so that Ray's own clients (its CLI, KubeRay) keep working.
//!
//! - Mode: `RAY_AUTH_MODE=token|disabled`. Unset, a new local instance (`photon run`, as Ray's
//!   `ray.init()`) turns it on and generates a token when none exists; `photon start` (as
//!   `ray start --head`) turns it on only when a token exists, and warns when it runs without.
//! - Token, first found: `RAY_AUTH_TOKEN`, the file `RAY_AUTH_TOKEN_PATH` names (an error when
//!   that file is missing or empty), `~/.ray/auth_token`; the first line, trimmed.
//! - Requests carry `Authorization: Bearer <token>`, else `X-Ray-Authorization` (KubeRay's),
//!   else the `ray-authentication-token` cookie. None: 401; a wrong one: 403.
//! - Whatever the mode, a browser may only read (`browser_check`), as Ray's dashboard rules.

use std::io::Write;
use std::path::PathBuf;

use http::HeaderMap;

/// The environment variable that sets the mode.
pub const MODE_ENV: &str = "RAY_AUTH_MODE";
/// The environment variable holding the token itself.
pub const TOKEN_ENV: &str = "RAY_AUTH_TOKEN";
/// The environment variable naming a file that holds the token.
pub const TOKEN_PATH_ENV: &str = "RAY_AUTH_TOKEN_PATH";
/// The cookie a browser session sends the token in.
pub const COOKIE: &str = "ray-authentication-token";

/// What Ray's loader says when token mode is on and no token is found.
pub const NO_TOKEN: &str = "Token authentication is enabled but Ray couldn't find an authentication token. \
Create a token file at ~/.ray/auth_token, or store the token in any file and set RAY_AUTH_TOKEN_PATH to point to it, \
or set the RAY_AUTH_TOKEN environment variable.";

/// Paths anyone may call, as Ray's dashboard leaves them open (health checks, the mode itself).
const PUBLIC_PATHS: [&str; 8] = [
    "/",
    "/favicon.ico",
    "/api/authentication_mode",
    "/api/authenticate",
    "/api/healthz",
    "/api/gcs_healthz",
    "/api/local_raylet_healthz",
    "/-/healthz",
];

/// `RAY_AUTH_MODE` as set: `Some(true)` for `token`, `Some(false)` for `disabled`, `None` when
/// unset; another value is an error naming it.
pub fn mode_from_env() -> Result<Option<bool>, String> {
    match std::env::var(MODE_ENV) {
        Err(_) => Ok(None),
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) if v.eq_ignore_ascii_case("token") => Ok(Some(true)),
        Ok(v) if v.eq_ignore_ascii_case("disabled") => Ok(Some(false)),
        Ok(v) => Err(format!("{MODE_ENV}: must be token or disabled, got {v:?}")),
    }
}

/// `~/.ray/auth_token`, where a generated token is written and looked for last.
pub fn default_token_path() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".ray").join("auth_token")
}

fn first_line_trimmed(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).ok().and_then(|t| t.lines().next().map(|l| l.trim().to_string())).unwrap_or_default()
}

/// The token from the first source that has one, in Ray's order; `Ok(None)` when none has.
pub fn load_token() -> Result<Option<String>, String> {
    if let Some(token) = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
        return Ok(Some(token.trim().to_string()).filter(|t| !t.is_empty()));
    }
    if let Some(path) = std::env::var_os(TOKEN_PATH_ENV).filter(|p| !p.is_empty()) {
        let token = first_line_trimmed(std::path::Path::new(&path));
        if token.is_empty() {
            return Err(format!(
                "{TOKEN_PATH_ENV} is set but file cannot be opened or is empty: {}",
                PathBuf::from(path).display()
            ));
        }
        return Ok(Some(token));
    }
    let token = first_line_trimmed(&default_token_path());
    Ok((!token.is_empty()).then_some(token))
}

/// A new token (256 random bits from the kernel, hex) written to `~/.ray/auth_token`, readable
/// by its owner only.
pub fn generate_and_save() -> Result<(String, PathBuf), String> {
    let token = photon_router::cluster_auth::random_token().map_err(|e| e.to_string())?;
    let path = default_token_path();
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(token.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|e| format!("cannot write a new authentication token to {}: {e}", path.display()))?;
    Ok((token, path))
}

/// What the REST API lets through.
#[derive(Clone, Default)]
pub enum RestAuth {
    /// Everyone (`RAY_AUTH_MODE=disabled`, or no token for `photon start`).
    #[default]
    Disabled,
    /// Requests that carry this token.
    Token(String),
}

/// Why a request was refused: its status and Ray's body.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 401 (no token) or 403 (a wrong one).
    pub status: u16,
    /// Ray's text for it.
    pub body: &'static str,
}

impl RestAuth {
    /// `token` or `disabled`, as `/api/authentication_mode` names it.
    pub fn mode_name(&self) -> &'static str {
        match self {
            RestAuth::Disabled => "disabled",
            RestAuth::Token(_) => "token",
        }
    }

    /// Whether a request for `path` with `headers` may go on.
    pub fn check(&self, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let RestAuth::Token(token) = self else { return Ok(()) };
        // `/metrics` stays open as Ray's metrics endpoints are: Prometheus scrapes without one.
        if PUBLIC_PATHS.contains(&path) || path.starts_with("/static/") || path == "/metrics" {
            return Ok(());
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
        let presented = header("authorization")
            .or_else(|| header("x-ray-authorization"))
            .map(str::to_string)
            .or_else(|| cookie(headers, COOKIE).map(|t| format!("Bearer {t}")));
        match presented {
            Some(presented) => bearer_of(&presented, token).map(|_| ()),
            None => Err(MISSING),
        }
    }
}

const MISSING: Refusal = Refusal { status: 401, body: "Unauthorized: Missing authentication token" };
const INVALID: Refusal = Refusal { status: 403, body: "Forbidden: Invalid authentication token" };

/// The token of a header value in Ray's one accepted form, `Bearer <token>`, if it is `token`
/// (compared in constant time).
fn bearer_of<'a>(presented: &'a str, token: &str) -> Result<&'a str, Refusal> {
    match presented.strip_prefix("Bearer ") {
        Some(given) if photon_router::cluster_auth::same(given.as_bytes(), token.as_bytes()) => Ok(given),
        _ => Err(INVALID),
    }
}

/// How long a browser keeps the token cookie `/api/authenticate` sets (Ray's 30 days).
pub const COOKIE_MAX_AGE_S: u64 = 30 * 24 * 60 * 60;

impl RestAuth {
    /// Ray's `POST /api/authenticate`: the token the request's `Authorization` header carries,
    /// for the cookie a browser session then sends; Ray's refusals otherwise.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let RestAuth::Token(token) = self else {
            return Err(Refusal { status: 401, body: "Unauthorized: Token authentication is not enabled" });
        };
        let header = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if header.is_empty() {
            return Err(MISSING);
        }
        bearer_of(header, token).map(str::to_string)
    }
}

/// Headers only browsers send (besides a `Mozilla` user agent), as Ray's dashboard tells them.
const BROWSER_HEADERS: [&str; 8] = [
    "referer",
    "origin",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "sec-fetch-site",
    "sec-fetch-user",
    "access-control-request-method",
    "access-control-request-headers",
];

/// Ray's rule against DNS rebinding and cross-site requests: a browser may only read (GET,
/// HEAD, OPTIONS); anything else it sends is refused with 405 and Ray's text, token or not.
pub fn browser_check(method: &http::Method, path: &str, headers: &HeaderMap) -> Result<(), String> {
    let agent = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let browser = agent.starts_with("Mozilla") || BROWSER_HEADERS.iter().any(|h| headers.contains_key(*h));
    let reads = [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS].contains(method);
    if !browser || reads || path == "/api/authenticate" {
        return Ok(());
    }
    Err(format!("'{method}' method not allowed for browser traffic."))
}

/// Against DNS rebinding: a REST API listening on a loopback address answers only requests
/// addressed to a loopback host (`localhost`, `127.0.0.0/8`, `::1`; any port). A web page whose
/// name its attacker made resolve to 127.0.0.1 sends its own name as the host and is refused,
/// so it can read nothing either. A request without a host (HTTP/1.0) goes on.
pub fn host_check(loopback_only: bool, uri: &http::Uri, headers: &HeaderMap) -> Result<(), String> {
    if !loopback_only {
        return Ok(());
    }
    let host = match headers.get(http::header::HOST) {
        Some(value) => value.to_str().unwrap_or("\u{fffd}").to_string(),
        None => match uri.host() {
            Some(h) => h.to_string(),
            None => return Ok(()),
        },
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host.as_str(), |(name, _port)| name),
    };
    let loopback =
        name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "Forbidden: host {host:?} is not this machine's loopback address (the REST API listens on it only)"
        ))
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn token_mode_takes_the_token_from_either_header_or_the_cookie() {
        let auth = RestAuth::Token("s3cret".into());
        let path = "/api/serve/applications/";
        assert_eq!(auth.check(path, &headers(&[("authorization", "Bearer s3cret")])), Ok(()));
        assert_eq!(auth.check(path, &headers(&[("x-ray-authorization", "Bearer s3cret")])), Ok(()));
        assert_eq!(auth.check(path, &headers(&[("cookie", "a=b; ray-authentication-token=s3cret")])), Ok(()));
        assert_eq!(auth.check(path, &headers(&[])).unwrap_err().status, 401);
        assert_eq!(auth.check(path, &headers(&[("authorization", "Bearer s3cre")])).unwrap_err().status, 403);
        assert_eq!(auth.check(path, &headers(&[("authorization", "s3cret")])).unwrap_err().status, 403);
        assert_eq!(auth.check("/api/healthz", &headers(&[])), Ok(()));
        assert_eq!(RestAuth::Disabled.check(path, &headers(&[])), Ok(()));
    }

    #[test]
    fn a_loopback_api_answers_loopback_hosts_only() {
        let uri: http::Uri = "/api/serve/applications/".parse().unwrap();
        for host in ["localhost:8265", "127.0.0.1:8265", "127.0.0.2", "[::1]:8265", "LOCALHOST"] {
            assert!(host_check(true, &uri, &headers(&[("host", host)])).is_ok(), "{host}");
        }
        for host in ["evil.example:8265", "evil.example", "localhost.evil.example", "10.0.0.1:8265", "[::2]:1"] {
            assert!(host_check(true, &uri, &headers(&[("host", host)])).is_err(), "{host}");
            assert!(host_check(false, &uri, &headers(&[("host", host)])).is_ok(), "{host}");
        }
        assert!(host_check(true, &uri, &HeaderMap::new()).is_ok(), "HTTP/1.0 sends no host");
    }

    #[test]
    fn authenticate_hands_back_a_valid_token_only() {
        let auth = RestAuth::Token("secret".into());
        assert_eq!(auth.authenticate(&headers(&[("authorization", "Bearer secret")])), Ok("secret".into()));
        // Ray's validation takes the one form `Bearer <token>`.
        assert_eq!(auth.authenticate(&headers(&[("authorization", "bearer secret")])).unwrap_err().status, 403);
        assert_eq!(auth.authenticate(&headers(&[("authorization", "Bearer guess")])).unwrap_err().status, 403);
        assert_eq!(auth.authenticate(&HeaderMap::new()).unwrap_err().status, 401);
        let off = RestAuth::Disabled.authenticate(&headers(&[("authorization", "Bearer secret")])).unwrap_err();
        assert_eq!(off.body, "Unauthorized: Token authentication is not enabled");
    }

    #[test]
    fn browsers_may_only_read() {
        let put = http::Method::PUT;
        let path = "/api/serve/applications/";
        assert!(browser_check(&put, path, &headers(&[("user-agent", "curl/8")])).is_ok());
        assert_eq!(
            browser_check(&put, path, &headers(&[("origin", "http://evil.example")])),
            Err("'PUT' method not allowed for browser traffic.".to_string())
        );
        assert!(browser_check(&put, path, &headers(&[("user-agent", "Mozilla/5.0")])).is_err());
        assert!(browser_check(&http::Method::GET, path, &headers(&[("user-agent", "Mozilla/5.0")])).is_ok());
    }
}
