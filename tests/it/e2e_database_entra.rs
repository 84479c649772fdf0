//! `database_auth = "azure"` against a PostgreSQL that checks passwords:
//! the role's password is the token the managed-identity stand-in hands
//! out, as Azure Database for PostgreSQL takes Entra ID tokens. tally signs
//! in with the token, and when the identity rotates it (and the server
//! takes only the new one) tally keeps working on the same pool, without a
//! restart — its connections are cut mid-run to prove new ones sign in with
//! the new token.

use std::time::{Duration, Instant};

use sqlx::Connection;
use tally_standins::identity::{FakeIdentity, IdentityConfig};

use crate::{private_pg::PrivatePostgres, support::*};

const RESOURCE: &str = "https://ossrdbms-aad.database.windows.net";

/// What the Container Apps identity endpoint answers now for PostgreSQL.
async fn token_now(identity: &FakeIdentity) -> String {
    let url = format!("{}?resource={RESOURCE}&api-version=2019-08-01", identity.identity_endpoint());
    let answer: serde_json::Value = reqwest::Client::new()
        .get(url)
        .header("X-IDENTITY-HEADER", identity.identity_header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_owned()
}

async fn wait_until(what: &str, secs: u64, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn entra_token_signs_in_and_a_rotated_token_is_picked_up_without_a_restart() {
    let pg = PrivatePostgres::start();
    // Tokens live 305 s: tally renews 300 s before expiry, so it asks again
    // within seconds — as it would near the end of a real token's hour.
    let config = IdentityConfig { lifetime: Duration::from_secs(305), ..IdentityConfig::default() };
    let identity = FakeIdentity::start(config).await.unwrap();
    let first = token_now(&identity).await;
    pg.psql(&format!("CREATE ROLE \"tally-id\" LOGIN PASSWORD '{first}'"));
    pg.psql("CREATE DATABASE tally OWNER \"tally-id\"");
    let url = format!("postgres://tally-id@127.0.0.1:{}/tally", pg.port);
    // This server does check: no password, no sign-in.
    let refused = sqlx::PgConnection::connect(&url).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("password"), "{refused}");

    let env = vec![
        ("IDENTITY_ENDPOINT".to_owned(), identity.identity_endpoint()),
        ("IDENTITY_HEADER".to_owned(), identity.identity_header().to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_on(TestDb::external(&url), dir, "database_auth = \"azure\"", env).await;
    send_traces(&s, &spans_at("acme", "/before", 10, now_ms(), 5, false)).await;
    s.wait_counts("acme", (10, 0, 0)).await;

    // The identity rotates; the server takes only the new token from now on,
    // and every connection tally holds is cut.
    let second = identity.rotate()[RESOURCE].clone();
    assert_ne!(first, second);
    pg.psql(&format!("ALTER ROLE \"tally-id\" PASSWORD '{second}'"));
    let rotated_at = pg.psql("SELECT now()");
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tally-id'");

    // Until tally has the new token an answer may be UNAVAILABLE: asked
    // again until the spans are stored.
    let mut client = grpc_client(&s.grpc_url()).await;
    wait_until("writes after the rotation", 30, async || {
        let req = encode(&spans_at("acme", "/after", 1, now_ms(), 5, false));
        let _ = grpc_export_traces(&mut client, req, &[]).await;
        s.counts("acme").await.0 > 10
    })
    .await;
    let signed_in = pg.psql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tally-id' AND backend_start > '{rotated_at}'"
    ));
    assert_ne!(signed_in, "0", "new connections signed in with the new token; server log:\n{}", pg.log());
    assert!(identity.requests_for(RESOURCE) >= 3, "the test's own request, tally's first, its renewal");
    let metrics = s.metrics().await;
    assert!(metric_value(&metrics, "tally_database_token_renewals_total{outcome=\"renewed\"}") >= 1.0, "{metrics}");
    // The old token was refused at least once only if tally tried it after
    // the rotation; either way nothing was lost and no restart happened.
    s.stop().await;
    drop(pg);
    identity.shutdown().await;
}

/// Workload identity: the federated token in `AZURE_FEDERATED_TOKEN_FILE`
/// is exchanged at the authority for an access token; another assertion is
/// refused.
#[tokio::test]
async fn workload_identity_exchanges_the_federated_token() {
    use tally_exporter::identity::TokenSource;
    let identity = FakeIdentity::start(IdentityConfig::default()).await.unwrap();
    identity.expect_assertion("federated-jwt");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "federated-jwt\n").unwrap();
    let env = [
        ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
        ("AZURE_TENANT_ID", "00000000-0000-0000-0000-0000000000cc".to_owned()),
        ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-0000000000dd".to_owned()),
        ("AZURE_AUTHORITY_HOST", identity.authority_host()),
    ];
    let lookup = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let source = TokenSource::from_env(&lookup, RESOURCE, None).unwrap();
    assert!(source.source().starts_with("workload identity"), "{}", source.source());
    let token = source.token().await.unwrap();
    assert_eq!(Some(token), identity.current_token(RESOURCE));
    std::fs::write(&file, "someone-else").unwrap();
    source.invalidate();
    assert!(source.token().await.is_err(), "a federated token the authority does not know is refused");
    identity.shutdown().await;
}
