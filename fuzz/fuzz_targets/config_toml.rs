//! The config loader: a TOML layer over the embedded defaults through
//! `Config::from_toml` (figment, serde, then `Config::validate`), as
//! `tally.toml` is read.
//!
//! What must hold, besides no panic:
//! - loaded ⇒ valid: `validate` accepts it again, and what start-up derives
//!   from it does too (tenant resolver, alert rules, receivers, meters,
//!   decode limits, addresses, the database description);
//! - the database URL (a secret) appears neither in `Debug` output nor, with
//!   its credentials, in the description logged at start;
//! - layering the same file twice loads exactly when once does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally::Config;
use tally_collector::{TenantResolver, events::Meters, otlp_usage::OtlpMeters};
use tally_core::{Secret, meter::validate_meters};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let loaded = Config::from_toml(&[text]);
    assert_eq!(
        Config::from_toml(&[text, text]).is_ok(),
        loaded.is_ok(),
        "the same layer twice loads differently from once"
    );
    let Ok(config) = loaded else { return };

    if let Err(e) = config.validate() {
        panic!("from_toml returned a config that validate refuses: {e:#}");
    }
    if let Err(e) = TenantResolver::new(&config.tenancy) {
        panic!("loaded with a tenancy the resolver refuses: {e}");
    }
    if let Err(e) = config.alert_rules() {
        panic!("loaded with alert rules that do not compile: {e:#}");
    }
    if let Err(e) = config.alert_receivers(None) {
        panic!("loaded with receivers that do not check: {e:#}");
    }
    if let Err(e) = validate_meters(&config.meters) {
        panic!("loaded with meters that do not validate: {e}");
    }
    let _ = Meters::new(&config.meters);
    let _ = OtlpMeters::new(&config.meters);
    for m in &config.meters {
        let _ = m.group_paths();
    }
    let _ = config.otlp.decode_limits();
    let _ = config.listen_addr();
    let _ = config.spool_dir();
    let _ = config.external_url(config.api.addr);

    let url = config.database_url.expose().to_owned();
    let description = config.database_description();
    if let Some((_, rest)) = url.split_once("://") {
        if let Some((userinfo, _)) = rest.rsplit_once('@') {
            if userinfo.contains(':') {
                assert!(
                    !description.contains(&format!("{userinfo}@")),
                    "the database description {description:?} carries the credentials"
                );
            }
        }
    }
    if url.len() >= 8 {
        let debug = format!("{config:?}");
        let mut without = config.clone();
        without.database_url = Secret::new(String::new());
        // Unless the same text is elsewhere in the config anyway.
        if !format!("{without:?}").contains(&url) {
            assert!(!debug.contains(&url), "Debug output shows database_url");
        }
    }
});
