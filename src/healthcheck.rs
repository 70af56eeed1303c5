//! `spacet healthcheck`: asks the running service's `/readiness` and answers with
//! the exit code, for a container HEALTHCHECK (the runtime image has no curl).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use crate::config::Settings;

/// How long the whole request may take: under the Dockerfile's HEALTHCHECK timeout.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Why the service is not reported healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("HTTP_PORT is 0 (a port picked at start-up): no fixed port to check")]
    NoFixedPort,
    #[error("GET {url} failed")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url} answered {status}")]
    NotReady {
        url: String,
        status: reqwest::StatusCode,
    },
}

/// The address to ask: the HTTP port on loopback when the servers listen on every
/// address (the usual `0.0.0.0`), else the address they listen on.
pub fn target(bind_address: IpAddr, http_port: u16) -> SocketAddr {
    let ip = match bind_address {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, http_port)
}

/// Asks `GET /readiness` at `addr`: `Ok` when it answers 200 within `timeout`.
pub async fn check(addr: SocketAddr, timeout: Duration) -> Result<(), HealthcheckError> {
    let url = format!("http://{addr}/readiness");
    let unreachable = |source: reqwest::Error| HealthcheckError::Unreachable {
        url: url.clone(),
        source,
    };
    // No proxy: HTTP_PROXY in a container's environment must not reroute a loopback call.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?;
    let response = client.get(&url).send().await.map_err(unreachable)?;
    match response.status() {
        reqwest::StatusCode::OK => Ok(()),
        status => Err(HealthcheckError::NotReady { url, status }),
    }
}

/// The subcommand: checks the service these settings describe.
pub async fn run(settings: &Settings) -> Result<(), HealthcheckError> {
    if settings.http_port == 0 {
        return Err(HealthcheckError::NoFixedPort);
    }
    check(target(settings.bind_address, settings.http_port), TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_bind_address_is_checked_on_loopback() {
        assert_eq!(
            target("0.0.0.0".parse().unwrap(), 8080),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            target("::".parse().unwrap(), 8080),
            "[::1]:8080".parse().unwrap()
        );
        assert_eq!(
            target("10.1.2.3".parse().unwrap(), 8080),
            "10.1.2.3:8080".parse().unwrap()
        );
    }
}
