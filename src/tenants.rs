//! `tally tenants list|show|set`: tenants and their Stripe customer, on the
//! database directly (like `tally keys`).

use clap::Subcommand;
use tally_core::{TenantId, now_ms};
use tally_store::{MappingError, Store};

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List tenants: id, Stripe customer, status, created.
    List,
    /// Map a tenant to a Stripe customer (creating the tenant if it has no
    /// usage yet); its usage is pushed from the next sync round.
    Set {
        tenant: String,
        /// The customer (`cus_…`).
        #[arg(long, value_name = "CUSTOMER", required_unless_present = "no_stripe_customer")]
        stripe_customer: Option<String>,
        /// Unmap it: usage stops being pushed (what was pushed stays).
        #[arg(long, conflicts_with = "stripe_customer")]
        no_stripe_customer: bool,
    },
}

pub async fn run(store: &Store, command: TenantsCommand) -> anyhow::Result<()> {
    match command {
        TenantsCommand::List => {
            println!("{:<32} {:<28} {:<10} CREATED", "TENANT", "STRIPE CUSTOMER", "STATUS");
            for t in store.tenants().await? {
                println!(
                    "{:<32} {:<28} {:<10} {}",
                    t.id,
                    t.stripe_customer_id.as_deref().unwrap_or("-"),
                    t.status,
                    crate::api::rfc3339(t.created_ms)
                );
            }
        }
        TenantsCommand::Set { tenant, stripe_customer, .. } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("tenant: {e}"))?;
            if let Some(c) = &stripe_customer {
                crate::api::tenants::check_customer_id(c).map_err(|e| anyhow::anyhow!("--stripe-customer: {e}"))?;
            }
            match store.set_stripe_customer(tenant.as_str(), stripe_customer.as_deref(), now_ms()).await {
                Ok(row) => match row.stripe_customer_id {
                    Some(c) => println!("tenant {} → Stripe customer {c}", row.id),
                    None => println!("tenant {} has no Stripe customer now", row.id),
                },
                Err(MappingError::CustomerTaken { customer, tenant }) => {
                    anyhow::bail!("Stripe customer {customer} is already mapped to tenant {tenant}")
                }
                Err(MappingError::Store(e)) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
