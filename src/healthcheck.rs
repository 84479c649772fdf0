//! `tally healthcheck`: exits 0 when the tally of this config answers
//! `/readyz` with 200 — for images without curl (the Dockerfile's
//! HEALTHCHECK, docker-compose). It asks the API address (or the one port in
//! one-port mode); a wildcard address is asked on loopback.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use crate::Config;

#[derive(clap::Args, Debug)]
pub struct HealthcheckArgs {
    /// Ask this URL instead of the config's API address.
    #[arg(long)]
    pub url: Option<String>,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The `/readyz` URL of the tally `config` describes.
pub fn readyz_url(config: &Config) -> String {
    let mut addr: SocketAddr = config.listen_addr().unwrap_or(config.api.addr);
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    format!("http://{addr}/readyz")
}

/// Asks once; `Err` says why it is not healthy.
pub async fn check(url: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
    let answer = client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    match answer.status().as_u16() {
        200 => Ok(()),
        status => Err(format!("{url} answered HTTP {status}")),
    }
}
