//! `tally keys create|list|revoke`: API keys, shown once, stored hashed.

use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng, distr::Alphanumeric, rngs::StdRng};
use tally_collector::auth::{KEY_PREFIX, hash_key};
use tally_core::{TenantId, now_ms};
use tally_store::{ApiKeyRow, Store};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (once: only its hash is stored).
    Create(CreateArgs),
    /// List keys: id, kind, tenant or service, created, revoked.
    List,
    /// Revoke a key by its id (the part after `tly_`).
    Revoke { id: String },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct CreateArgs {
    /// A tenant key: pinned to this tenant (writes and reads only its data).
    #[arg(long)]
    tenant: Option<String>,
    /// A service key for a trusted backend named NAME: the tenant comes from the data.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// An admin key: reads all tenants.
    #[arg(long)]
    admin: bool,
}

fn random(rng: &mut StdRng, n: usize) -> String {
    rng.sample_iter(&Alphanumeric).take(n).map(char::from).collect()
}

pub async fn run(store: &Store, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(args) => {
            let (kind, tenant, name) = match (args.tenant, args.service, args.admin) {
                (Some(t), _, _) => {
                    let t = TenantId::parse(&t).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
                    ("tenant", Some(t.to_string()), String::new())
                }
                (_, Some(s), _) => ("service", None, s),
                _ => ("admin", None, String::new()),
            };
            // 12 + 40 alphanumerics from the OS's CSPRNG: ~300 bits.
            let mut rng = StdRng::from_os_rng();
            let id = random(&mut rng, 12).to_ascii_lowercase();
            let key = format!("{KEY_PREFIX}{id}_{}", random(&mut rng, 40));
            store
                .insert_api_key(&ApiKeyRow {
                    id: id.clone(),
                    hash: hash_key(&key),
                    kind: kind.to_owned(),
                    tenant,
                    name,
                    created_ms: now_ms(),
                    revoked_ms: None,
                })
                .await?;
            eprintln!("created {kind} key {id}; it is shown once, store it now:");
            println!("{key}");
        }
        KeysCommand::List => {
            println!("{:<14} {:<8} {:<24} {:<20} REVOKED", "ID", "KIND", "TENANT/SERVICE", "CREATED");
            for k in store.api_keys().await? {
                let when = |ms: i64| {
                    chrono::DateTime::from_timestamp_millis(ms)
                        .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                };
                println!(
                    "{:<14} {:<8} {:<24} {:<20} {}",
                    k.id,
                    k.kind,
                    k.tenant.as_deref().unwrap_or(&k.name),
                    when(k.created_ms),
                    k.revoked_ms.map_or_else(|| "-".to_owned(), when)
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let id = id.trim_start_matches(KEY_PREFIX);
            anyhow::ensure!(store.revoke_api_key(id, now_ms()).await?, "no active key with id {id:?}");
            println!("revoked {id}; running servers stop accepting it within auth.refresh_interval");
        }
    }
    Ok(())
}
