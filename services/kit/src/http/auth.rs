//! Bearer-token authentication of an API.
//!
//! A service accepts a set of tokens: from a file (one per line, re-read every [`RELOAD_EVERY`], so that
//! replacing the file, or updating the Kubernetes Secret it is mounted from, rotates them without a
//! restart) and from `API_TOKEN`. Several tokens may be valid at once, which is how a rotation overlaps.
//! Only the SHA-256 digests of the tokens are kept, and a presented token's digest is compared with
//! every one of them in constant time, so neither a token's content nor its length leaks through timing.
//! No token is ever logged.
//!
//! A failure is a JSON 401 with `WWW-Authenticate: Bearer` (RFC 6750). `/healthz`, `/readyz`,
//! `/metrics` and the OpenAPI document stay open: probes and scrapers carry no token, and none of them
//! tells anything about the business data.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use anyhow::{Context, bail};
use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::openapi::{
    OpenApi, Ref, ResponseBuilder,
    security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
};

use super::error_response;

/// How often the tokens file is re-read.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The shortest token accepted: 128 bits, written as 32 hexadecimal digits.
pub const MIN_TOKEN_LEN: usize = 32;

/// Who may call the API. Both services take these flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthConfig {
    /// File of the accepted API bearer tokens, one per line (blank lines and `#` comments are ignored).
    /// It is re-read every 5 s: replacing it, or updating the Secret it is mounted from, rotates tokens
    /// without a restart. Every token has at least 32 characters and no whitespace; a line that is not
    /// one is skipped with a warning.
    #[arg(long = "api-tokens-file", env = "API_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Accepted API bearer tokens, comma-separated; added to those of the file. Changing them needs a
    /// restart.
    #[arg(long = "api-token", env = "API_TOKEN", hide_env_values = true, value_delimiter = ',')]
    pub tokens: Vec<SecretString>,

    /// Serve the API without authentication, for a mesh or gateway that authenticates in front of it.
    #[arg(long, env = "ALLOW_UNAUTHENTICATED", conflicts_with_all = ["tokens_file", "tokens"])]
    pub allow_unauthenticated: bool,
}

/// How a service's API authenticates its callers.
#[derive(Clone)]
pub enum Auth {
    /// Anyone may call it (`--allow-unauthenticated`).
    Open,
    /// A bearer token from the set is required.
    Bearer(Tokens),
}

impl Auth {
    /// The authentication `config` asks for. Without any token, the service refuses to start unless it
    /// was told to run open. A tokens file is then watched for as long as the returned value lives.
    pub fn from_config(config: &AuthConfig, realm: &'static str) -> anyhow::Result<Self> {
        if config.allow_unauthenticated {
            tracing::warn!("the API accepts requests without authentication (--allow-unauthenticated)");
            return Ok(Self::Open);
        }
        if config.tokens_file.is_none() && config.tokens.is_empty() {
            bail!("no API token is configured: give --api-tokens-file or API_TOKEN, or --allow-unauthenticated");
        }
        let fixed =
            config.tokens.iter().map(|token| parse_token(token.expose_secret())).collect::<Result<Vec<_>, _>>()?;
        let tokens = Tokens {
            realm,
            inner: Arc::new(Inner { fixed, file: config.tokens_file.clone(), current: RwLock::default() }),
        };
        tokens.reload()?;
        if tokens.inner.file.is_some() {
            tokio::spawn(watch(Arc::downgrade(&tokens.inner), realm));
        }
        Ok(Self::Bearer(tokens))
    }

    /// Describes the scheme in `openapi`: a `bearer` security scheme required by every operation, each
    /// of which may answer 401.
    pub fn document(&self, openapi: &mut OpenApi) {
        if matches!(self, Self::Open) {
            return;
        }
        let scheme = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        openapi.components.get_or_insert_default().add_security_scheme("bearer", scheme);
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
        let unauthorized = ResponseBuilder::new()
            .description("No bearer token, or not a valid one")
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                operation.responses.responses.insert("401".to_owned(), unauthorized.clone().into());
            }
        }
    }
}

/// The accepted tokens, as digests.
#[derive(Clone)]
pub struct Tokens {
    realm: &'static str,
    inner: Arc<Inner>,
}

struct Inner {
    /// From `API_TOKEN`.
    fixed: Vec<[u8; 32]>,
    file: Option<PathBuf>,
    /// `fixed` plus the file's, as last read.
    current: RwLock<Vec<[u8; 32]>>,
}

impl Tokens {
    /// Whether `presented` is one of the tokens. Every digest is compared, whatever matches first.
    pub fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let current = self.inner.current.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        current.iter().fold(subtle::Choice::from(0), |found, token| found | token.ct_eq(&digest)).into()
    }

    fn count(&self) -> usize {
        self.inner.current.read().map_or(0, |current| current.len())
    }

    /// Reads the file again; returns whether the set changed. On an error the set stays as it was.
    fn reload(&self) -> anyhow::Result<bool> {
        let mut tokens = self.inner.fixed.clone();
        if let Some(file) = &self.inner.file {
            tokens.extend(read_tokens(file)?);
        }
        tokens.sort_unstable();
        tokens.dedup();
        let mut current = self.inner.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = *current != tokens;
        *current = tokens;
        Ok(changed)
    }
}

/// Re-reads the tokens file every [`RELOAD_EVERY`] until the tokens are dropped. A file that cannot be
/// read, or that holds no valid token, leaves the previous set in force.
async fn watch(inner: Weak<Inner>, realm: &'static str) {
    let mut every = tokio::time::interval(RELOAD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let tokens = Tokens { realm, inner };
        let reloaded = tokio::task::spawn_blocking({
            let tokens = tokens.clone();
            move || tokens.reload()
        });
        match reloaded.await {
            Ok(Ok(true)) => tracing::info!(tokens = tokens.count(), "API tokens reloaded"),
            Ok(Ok(false)) | Err(_) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = format!("{error:#}"), "API tokens not reloaded; the previous ones stay valid")
            }
        }
    }
}

/// The digests of the valid tokens in `file`; an error if it cannot be read or holds no valid token. An
/// invalid line is skipped with a warning (naming its line, never its content): a file that was edited
/// to revoke a token must not keep it valid because another line has a typo.
fn read_tokens(file: &Path) -> anyhow::Result<Vec<[u8; 32]>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read the API tokens file {}", file.display()))?;
    let mut tokens = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_token(line) {
            Ok(digest) => tokens.push(digest),
            Err(error) => {
                tracing::warn!(file = %file.display(), line = number + 1, "skipping an invalid API token: {error}")
            }
        }
    }
    if tokens.is_empty() {
        bail!("the API tokens file {} holds no valid token", file.display());
    }
    Ok(tokens)
}

/// A token's digest, if the token is acceptable as one. The error never contains the token.
fn parse_token(token: &str) -> anyhow::Result<[u8; 32]> {
    if token.len() < MIN_TOKEN_LEN {
        bail!("an API token must have at least {MIN_TOKEN_LEN} characters");
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("an API token must not contain whitespace or control characters");
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// Who made a request, as far as the API can tell: a short digest of the bearer token it authenticated
/// with (never the token), in the request's extensions. Absent when the API runs open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl Caller {
    fn of(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        Self(digest[..8].iter().map(|byte| format!("{byte:02x}")).collect())
    }
}

/// The middleware: passes a request that carries an accepted bearer token, answers 401 otherwise.
pub async fn require_bearer(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let Auth::Bearer(tokens) = &auth else { return next.run(request).await };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if tokens.accepts(token) => {
            let caller = Caller::of(token);
            let mut request = request;
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Some(_) => unauthorized(tokens.realm, Some("invalid_token"), "the bearer token is not valid"),
        None => unauthorized(tokens.realm, None, "this API needs a bearer token: send `Authorization: Bearer <token>`"),
    }
}

fn unauthorized(realm: &str, error: Option<&str>, message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let challenge = match error {
        Some(error) => format!("Bearer realm=\"{realm}\", error=\"{error}\""),
        None => format!("Bearer realm=\"{realm}\""),
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHA: &str = "alpha-0123456789abcdef0123456789abcdef";
    const BRAVO: &str = "bravo-0123456789abcdef0123456789abcdef";

    fn config(file: Option<PathBuf>, tokens: &[&str]) -> AuthConfig {
        AuthConfig {
            tokens_file: file,
            tokens: tokens.iter().map(|t| (*t).into()).collect(),
            allow_unauthenticated: false,
        }
    }

    fn bearer(auth: &Auth) -> &Tokens {
        match auth {
            Auth::Bearer(tokens) => tokens,
            Auth::Open => panic!("expected bearer authentication"),
        }
    }

    #[tokio::test]
    async fn without_tokens_the_service_does_not_start_unless_told_to_run_open() {
        let error = Auth::from_config(&config(None, &[]), "test").err().expect("refused");
        assert!(error.to_string().contains("--allow-unauthenticated"), "{error}");
        let open = AuthConfig { allow_unauthenticated: true, ..AuthConfig::default() };
        assert!(matches!(Auth::from_config(&open, "test").unwrap(), Auth::Open));
    }

    #[tokio::test]
    async fn only_the_configured_tokens_are_accepted() {
        let auth = Auth::from_config(&config(None, &[ALPHA, BRAVO]), "test").unwrap();
        let tokens = bearer(&auth);
        assert!(tokens.accepts(ALPHA) && tokens.accepts(BRAVO));
        assert!(!tokens.accepts(&ALPHA[..ALPHA.len() - 1]), "a prefix is not the token");
        assert!(!tokens.accepts(&format!("{ALPHA}0")), "nor is a longer one");
        assert!(!tokens.accepts(""));
    }

    #[tokio::test]
    async fn short_tokens_are_refused_without_being_echoed() {
        let error = Auth::from_config(&config(None, &["hunter2"]), "test").err().expect("refused");
        assert!(!format!("{error:#}").contains("hunter2"), "{error:#}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn replacing_the_file_rotates_the_tokens_and_a_broken_file_keeps_the_old_ones() {
        let dir = std::env::temp_dir().join(format!("auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, format!("# current\n{ALPHA}\n\n")).unwrap();
        let auth = Auth::from_config(&config(Some(file.clone()), &[]), "test").unwrap();
        let tokens = bearer(&auth);
        assert!(tokens.accepts(ALPHA) && !tokens.accepts(BRAVO));

        // Overlap: both, then only the new one.
        std::fs::write(&file, format!("{ALPHA}\n{BRAVO}\n")).unwrap();
        assert!(tokens.reload().unwrap());
        assert!(tokens.accepts(ALPHA) && tokens.accepts(BRAVO));
        std::fs::write(&file, format!("{BRAVO}\n")).unwrap();
        assert!(tokens.reload().unwrap());
        assert!(!tokens.accepts(ALPHA) && tokens.accepts(BRAVO));

        // An empty file (a half-written Secret, say) is an error, and BRAVO stays valid.
        std::fs::write(&file, "\n").unwrap();
        assert!(tokens.reload().is_err());
        assert!(tokens.accepts(BRAVO));

        // Revoking BRAVO in an edit that also leaves a bad line: the bad line is skipped, BRAVO goes.
        std::fs::write(&file, format!("{ALPHA}\ntoo-short\n")).unwrap();
        assert!(tokens.reload().unwrap());
        assert!(tokens.accepts(ALPHA) && !tokens.accepts(BRAVO));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
