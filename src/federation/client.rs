//! The one HTTPS client for other servers: HTTPS only, no proxy, every
//! resolved address and every redirect checked by the address guard.

use std::{sync::Arc, time::Duration};

use super::{AddressGuard, FederationError, GuardedResolver};
use crate::config::FederationConfig;

pub(super) fn outbound_client(
    config: &FederationConfig,
    resolver: &GuardedResolver,
) -> Result<reqwest::Client, FederationError> {
    let guard = resolver.guard().clone();
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .no_proxy()
        .dns_resolver(Arc::new(resolver.clone()))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(config.idle_timeout)
        .redirect(redirect_policy(guard))
        .user_agent(concat!("mxmedia/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.extra_ca_path {
        let err = |reason: String| FederationError::ExtraCa {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no certificate in the file".to_owned()));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| FederationError::Client(e.to_string()))
}

/// At most 5 redirects, each target checked by the guard.
pub fn redirect_policy(guard: AddressGuard) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        // `previous` holds every URL asked so far, the first one included.
        if attempt.previous().len() > 5 {
            return attempt.error("more than 5 redirects");
        }
        match guard.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}
