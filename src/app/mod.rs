//! Wiring: config -> stores -> services -> router; serving with graceful
//! shutdown and the background sweeper. Tests start the real thing through
//! [`Server::start`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderName, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{
    auth::{AuthError, Authenticator},
    cache::HotCache,
    config::{Config, DatabaseConfig},
    federation::Federation,
    homeserver::Directory,
    http::{
        self, AppState,
        client_addr::{ClientAddr, TrustedProxies, resolve_client},
    },
    media::ports::RepoError,
    media::{MediaService, Wiring},
    metrics::Metrics,
    storage::{Backend, SelfcheckError, SelfcheckReport, StorageError, build_datastores},
};

/// How long shutdown waits for in-flight requests before it stops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("metadata store: {0}")]
    Repo(#[from] RepoError),
    #[error("datastore: {0}")]
    Storage(#[from] StorageError),
    #[error("homeserver client: {0}")]
    Auth(#[from] AuthError),
    #[error("federation: {0}")]
    Federation(#[from] crate::federation::FederationError),
    #[error("self-test: {0}")]
    Selfcheck(#[from] SelfcheckError),
    #[error("{0}")]
    Ownership(Box<crate::media::OwnershipError>),
    #[error("control socket {path}: {source}")]
    Control {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("homeserver.admin_token: {0}")]
    Secret(#[from] crate::config::secret::SecretError),
    #[error(transparent)]
    Previews(#[from] crate::preview::PreviewSetupError),
    #[error("database: type postgres needs url or url_file")]
    NoDatabaseUrl,
    /// An operation that does not apply to this deployment, and why.
    #[error("{0}")]
    Refused(String),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::media::OwnershipError> for AppError {
    fn from(error: crate::media::OwnershipError) -> Self {
        Self::Ownership(Box::new(error))
    }
}

mod database;

use database::{ClosedProbe, open_metadata};
pub use database::{backup_database, migrate_database, open_database, restore_database};

/// Opens the stores and builds the services for `config`.
pub async fn build_state(config: &Config) -> Result<AppState, AppError> {
    Ok(build_with_probe(config).await?.0)
}

/// The URL previewer, when previews are on.
fn previewer(config: &Config) -> Result<Option<crate::media::PreviewWiring>, AppError> {
    if !config.url_previews.enabled {
        return Ok(None);
    }
    let previewer = crate::preview::HttpPreviewer::new(&config.url_previews)?;
    Ok(Some((Arc::new(previewer), config.url_previews.clone())))
}

async fn build_with_probe(config: &Config) -> Result<(AppState, ClosedProbe), AppError> {
    let (metadata, closed) = open_metadata(config).await?;
    let metrics = Metrics::new();
    let stores = build_datastores(&config.datastores, &config.data_dir)?.instrument(&metrics);
    let remote_stores = stores.iter().any(|s| s.backend() != Backend::Local);
    let cache = if config.cache.enabled && remote_stores {
        let dir = config.cache_path();
        Some(
            HotCache::create(
                &dir,
                config.cache.max_size.as_u64(),
                config.cache.max_file_size.as_u64(),
            )
            .map_err(|e| StorageError::Setup(format!("cache at {}: {e}", dir.display())))?,
        )
    } else {
        None
    };
    let federation = Federation::new(config.server_name.clone(), &config.federation)?;
    let auth = Authenticator::new(&config.homeserver, &config.admin, metrics.ops().clone())?;
    let media = MediaService::new(
        Wiring {
            server_name: config.server_name.clone(),
            metadata,
            stores,
            cache,
            memory: (config.cache.memory.max_size.as_u64() > 0).then(|| {
                crate::cache::MemoryTier::new(
                    config.cache.memory.max_size.as_u64(),
                    config.cache.memory.max_file_size.as_u64(),
                )
            }),
            remote: Arc::new(federation.clone()),
            homeserver: Arc::new(Directory::new(
                auth.homeserver_client(),
                config.homeserver.url.clone(),
            )),
            previewer: previewer(config)?,
            metrics: metrics.clone(),
        },
        config.media.clone(),
        config.thumbnails.clone(),
        &config.federation,
        policies(config)?,
    );
    let state = AppState {
        media,
        auth,
        config: Arc::new(config.clone()),
        metrics,
        federation,
    };
    Ok((state, closed))
}

/// How this server's metadata database is named in ownership markers and
/// in the errors that refuse a foreign datastore.
/// Retention and quotas as configured, with the homeserver admin token
/// read (from its file, if so given).
fn policies(config: &Config) -> Result<crate::media::Policies, AppError> {
    let token = crate::config::Secret::resolve(
        config.homeserver.admin_token.as_ref(),
        config.homeserver.admin_token_file.as_deref(),
    )?;
    Ok(crate::media::Policies {
        retention: config.retention.clone(),
        quotas: config.quotas.clone(),
        rate_limits: config.rate_limits.clone(),
        homeserver_token: token.map(|t| crate::auth::Credentials {
            token: t.expose().to_owned(),
            user_id: None,
            device_id: None,
        }),
    })
}

pub fn database_label(config: &Config) -> String {
    match &config.database {
        DatabaseConfig::Sled { .. } => format!("sled at {}", config.sled_path().display()),
        DatabaseConfig::Postgres { url, .. } => {
            // Where, never with the password.
            let place = url
                .as_ref()
                .and_then(|u| url::Url::parse(u.expose()).ok())
                .map(|u| {
                    format!(
                        "{}:{}{}",
                        u.host_str().unwrap_or("localhost"),
                        u.port().unwrap_or(5432),
                        u.path()
                    )
                });
            format!(
                "PostgreSQL at {}",
                place.unwrap_or_else(|| "its url_file".to_owned())
            )
        }
    }
}

/// The router with its layer stack (outermost first): request id, client
/// address, trace, request-id propagation, metrics, catch-panic, then the
/// routes.
pub fn build(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let trusted = TrustedProxies::new(&state.config.trusted_proxies);
    let metrics = state.metrics.clone();
    http::router(state)
        .layer(CatchPanicLayer::custom(|_| panic_response()))
        .layer(middleware::from_fn_with_state(
            metrics,
            crate::http::observe::track,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-");
                    let client = request.extensions().get::<ClientAddr>().map(|c| c.0);
                    // The path only: the query may hold an access token.
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = request.uri().path(),
                        request_id = id,
                        client = client.map(tracing::field::display),
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                // 5xx are logged once, with their cause, by `ApiError`.
                .on_failure(()),
        )
        .layer(middleware::from_fn_with_state(trusted, resolve_client))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Serves `router` on `listener` until `stop` turns true.
fn serve_until<L>(
    listener: L,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    })
}

/// `GET /metrics` on the metrics listener: gauges read from the stores at
/// scrape time, then every metric in the text format.
fn metrics_router(state: AppState) -> Router {
    async fn scrape(State(state): State<AppState>) -> Response {
        match state.media.pending_count().await {
            Ok(pending) => state.metrics.set_uploads_pending(pending),
            Err(error) => tracing::warn!(%error, "cannot count pending uploads"),
        }
        if let Some((bytes, max)) = state.media.cache_size() {
            state.metrics.ops().cache_size(bytes, max);
        }
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.encode(),
        )
            .into_response()
    }
    Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(state)
}

fn panic_response() -> Response {
    tracing::error!("handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(serde_json::json!({ "errcode": "M_UNKNOWN", "error": "Internal server error" })),
    )
        .into_response()
}

/// A running server: its address, its state, and the handles to stop it.
pub struct Server {
    addr: SocketAddr,
    state: AppState,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<std::io::Result<()>>,
    control: JoinHandle<std::io::Result<()>>,
    control_path: std::path::PathBuf,
    sweeper: JoinHandle<()>,
    /// Relays other instances' commits (shared databases only).
    relay: JoinHandle<()>,
    closed: ClosedProbe,
    metrics: Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
}

impl Server {
    /// Binds `config.listen` and starts serving.
    pub async fn start(config: &Config) -> Result<Self, AppError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| AppError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Self::start_on(listener, config).await
    }

    /// Starts serving on an already bound listener (tests bind port 0),
    /// after the datastore self-tests when they are on.
    pub async fn start_on(listener: TcpListener, config: &Config) -> Result<Self, AppError> {
        let addr = listener.local_addr().map_err(|source| AppError::Listen {
            addr: config.listen,
            source,
        })?;
        let (state, closed) = build_with_probe(config).await?;
        if config.selfcheck_on_start {
            for report in selfcheck(&state).await? {
                tracing::info!(
                    datastore = report.datastore,
                    calls = ?report.calls,
                    "datastore self-test passed"
                );
            }
        }
        // Before anything can write or sweep: every datastore must be ours.
        // (After the self-test, whose throw-away objects delete nothing, so
        // a datastore that cannot be reached is reported as such.)
        for (datastore, claim) in state
            .media
            .claim_datastores(&database_label(config))
            .await?
        {
            tracing::debug!(%datastore, ?claim, "datastore ownership checked");
        }
        let control_path = config.control_socket_path();
        let control_listener = bind_control(&control_path)?;
        let metrics_listener = match config.metrics.listen {
            Some(listen) => {
                Some(
                    TcpListener::bind(listen)
                        .await
                        .map_err(|source| AppError::Listen {
                            addr: listen,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let (shutdown, stop) = watch::channel(false);

        let router = build(state.clone());
        let limits = http::listener::ConnectionLimits {
            max_connections: config.connections.max,
            header_timeout: config.connections.header_timeout,
            idle_timeout: config.connections.idle_timeout,
        };
        let serve = tokio::spawn(http::listener::serve(
            listener,
            router,
            limits,
            stop.clone(),
        ));

        let control = serve_until(
            control_listener,
            http::control::control_router(state.clone()),
            stop.clone(),
        );

        let metrics = match metrics_listener {
            Some(listener) => {
                let bound = listener.local_addr().map_err(|source| AppError::Listen {
                    addr: config.listen,
                    source,
                })?;
                tracing::info!(addr = %bound, "metrics listening");
                let task = serve_until(listener, metrics_router(state.clone()), stop.clone());
                Some((bound, task))
            }
            None => None,
        };

        let sweeper = tokio::spawn(housekeeping(
            state.media.clone(),
            state.metrics.ops().clone(),
            config.clone(),
            stop,
        ));
        let relay_media = state.media.clone();
        let relay = tokio::spawn(async move {
            if let Err(error) = relay_media.relay_commits().await {
                tracing::warn!(%error, "commits of other instances are not relayed");
            }
        });
        tracing::info!(%addr, server_name = %config.server_name, "mxmedia listening");
        Ok(Self {
            addr,
            state,
            shutdown,
            serve,
            control,
            control_path,
            sweeper,
            relay,
            closed,
            metrics,
        })
    }

    /// Address of the metrics listener, when metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, lets in-flight requests finish (up to a grace
    /// period), stops the sweeper and flushes metadata.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let abort = self.serve.abort_handle();
        match tokio::time::timeout(SHUTDOWN_GRACE, self.serve).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "server stopped with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "server task failed"),
            Err(_) => {
                tracing::warn!("in-flight requests did not finish in time; stopping them");
                abort.abort();
            }
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.control)
            .await
            .is_err()
        {
            tracing::warn!("a control request did not finish in time");
        }
        let _ = std::fs::remove_file(&self.control_path);
        if let Some((_, task)) = self.metrics {
            // A scrape is quick; one that hangs is not worth waiting for.
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("a metrics scrape did not finish in time");
            }
        }
        let _ = self.sweeper.await;
        // The commit feed holds a database connection: let it go first.
        self.relay.abort();
        let _ = self.relay.await;
        if let Err(error) = self.state.media.close().await {
            tracing::error!(%error, "final metadata flush failed");
        }
        // Connection tasks may drop their copy of the state just after the
        // server future ends; wait until the store is really closed, so a
        // restart in this process can open it again.
        drop(self.state);
        for _ in 0..100 {
            if (self.closed)() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!("mxmedia stopped");
    }
}

/// Binds the control socket, replacing a stale one (a live server on the
/// same data directory would already have failed on the database lock), and
/// makes it reachable by the owning user only.
/// The background jobs: the sweep, writing noted access times, and
/// retention when it is configured; each on its own interval, one at a
/// time, until `stop`.
async fn housekeeping(
    media: MediaService,
    jobs: crate::metrics::Operations,
    config: Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let start = tokio::time::Instant::now();
    let mut sweep = tokio::time::interval_at(
        start + config.media.sweep_interval,
        config.media.sweep_interval,
    );
    // What the datastores hold: sampled at start, then with every sweep.
    let mut sample = tokio::time::interval_at(start, config.media.sweep_interval);
    let flush = config.retention.access_flush_interval;
    let mut accesses = tokio::time::interval_at(start + flush, flush);
    let mut retention =
        tokio::time::interval_at(start + config.retention.interval, config.retention.interval);
    for timer in [&mut sweep, &mut accesses, &mut retention, &mut sample] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = sweep.tick() => {
                let done = media.sweep().await;
                jobs.job("sweep", done.is_ok());
                if let Err(error) = done {
                    tracing::warn!(%error, "sweep failed");
                }
            }
            _ = accesses.tick() => {
                let done = media.flush_accesses().await;
                jobs.job("access_times", done.is_ok());
                if let Err(error) = done {
                    tracing::warn!(%error, "recording access times failed");
                }
            }
            _ = retention.tick(), if config.retention.enabled() => {
                let done = media.retention(false, |_| {}).await;
                jobs.job("retention", done.is_ok());
                if let Err(error) = done {
                    tracing::warn!(%error, "retention failed");
                }
            }
            _ = sample.tick() => {
                let done = media.sample_datastores().await;
                jobs.job("datastore_sample", done.is_ok());
                if let Err(error) = done {
                    tracing::warn!(%error, "sampling the datastores failed");
                }
            }
        }
    }
}

fn bind_control(path: &std::path::Path) -> Result<tokio::net::UnixListener, AppError> {
    use std::os::unix::fs::PermissionsExt;
    let error = |source| AppError::Control {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(error)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    Ok(listener)
}

/// Runs every datastore's self-test; the first failure is the error.
pub async fn selfcheck(state: &AppState) -> Result<Vec<SelfcheckReport>, SelfcheckError> {
    state.media.selfcheck().await
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn run(config: &Config) -> Result<(), AppError> {
    let server = Server::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutdown requested");
    server.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
