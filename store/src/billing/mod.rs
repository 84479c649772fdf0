//! Subscription status from Stripe webhooks, keyed by Stripe customer
//! (the tenant is found through `tenants.stripe_customer_id`, so a status
//! that arrives before its mapping is kept), and — in [`limits`] — the
//! allowances, the credit ledger and the notices that entitlements cause.
//!
//! A webhook event is applied in one transaction with the row that records
//! its id: a redelivery finds the id and changes nothing; two replicas
//! given the same event race on the primary key and one rolls back. Status
//! changes carry the `created` time of their event: an event older than the
//! state held never overwrites it (Stripe delivers out of order).

mod limits;

pub use limits::{CreditBalance, CreditEntry, CreditKind, LimitRow, NewCredit, PeriodUsage};

use sqlx::Row;

use crate::{NewNotification, Result, Store, on_pool, store::BeginWrite};

/// What a webhook event says, decoded (exporter/src/stripe/webhook.rs).
#[derive(Debug, Clone, PartialEq)]
pub enum BillingEffect {
    /// `customer.subscription.*`: the subscription's state as of the event.
    Subscription {
        customer: String,
        subscription_id: String,
        status: String,
        /// The current billing period, when the object has one.
        period: Option<(i64, i64)>,
        /// The tenant named by the object's metadata, if any.
        tenant_hint: Option<String>,
    },
    /// `invoice.paid|payment_failed|payment_action_required`.
    Invoice { customer: String, outcome: String, tenant_hint: Option<String> },
    /// `customer.created|updated`: only the mapping, from metadata.
    Customer { customer: String, tenant_hint: Option<String> },
}

impl BillingEffect {
    pub fn customer(&self) -> &str {
        match self {
            BillingEffect::Subscription { customer, .. }
            | BillingEffect::Invoice { customer, .. }
            | BillingEffect::Customer { customer, .. } => customer,
        }
    }

    fn tenant_hint(&self) -> Option<&str> {
        match self {
            BillingEffect::Subscription { tenant_hint, .. }
            | BillingEffect::Invoice { tenant_hint, .. }
            | BillingEffect::Customer { tenant_hint, .. } => tenant_hint.as_deref(),
        }
    }
}

/// A webhook event to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub id: String,
    pub kind: String,
    pub created_s: i64,
    pub effect: BillingEffect,
}

/// A customer's billing state as held, with its tenant when mapped.
#[derive(Debug, Clone, PartialEq, Default, sqlx::FromRow)]
pub struct CustomerBilling {
    pub customer_id: String,
    pub tenant: Option<String>,
    pub subscription_id: Option<String>,
    pub status: Option<String>,
    pub period_start_ms: Option<i64>,
    pub period_end_ms: Option<i64>,
    pub prev_start_ms: Option<i64>,
    pub prev_end_ms: Option<i64>,
    pub status_at_s: i64,
    pub payment: Option<String>,
    pub payment_at_s: Option<i64>,
    pub updated_ms: i64,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Its id was applied before: nothing changed.
    Duplicate,
    /// Applied (or found older than the state held: `stale`). `before` and
    /// `after` are the customer's state around it.
    Done { stale: bool, before: Option<Box<CustomerBilling>>, after: Box<CustomerBilling> },
}

const COLUMNS: &str = "c.customer_id, t.id AS tenant, c.subscription_id, c.status, c.period_start_ms, c.period_end_ms, \
     c.prev_start_ms, c.prev_end_ms, c.status_at_s, c.payment, c.payment_at_s, c.updated_ms";

/// Status changes an invoice implies before Stripe's own
/// `customer.subscription.updated` arrives: a failed payment makes a live
/// subscription past due, a paid invoice settles a past-due one.
fn invoice_status(outcome: &str, status: Option<&str>) -> Option<&'static str> {
    match (outcome, status) {
        ("payment_failed", Some("active" | "trialing")) => Some("past_due"),
        ("paid", Some("past_due" | "unpaid")) => Some("active"),
        _ => None,
    }
}

/// The state after `event`, from `before` (None: first heard of).
fn next_state(event: &WebhookEvent, before: Option<&CustomerBilling>, now_ms: i64) -> (bool, CustomerBilling) {
    let mut s = before.cloned().unwrap_or_else(|| CustomerBilling {
        customer_id: event.effect.customer().to_owned(),
        // No status held yet: any subscription event sets one.
        status_at_s: 0,
        ..CustomerBilling::default()
    });
    let newer = event.created_s >= s.status_at_s;
    match &event.effect {
        BillingEffect::Subscription { subscription_id, status, period, .. } => {
            if !newer {
                return (true, s);
            }
            s.subscription_id = Some(subscription_id.clone());
            s.status = Some(status.clone());
            if let Some((start, end)) = *period
                && s.period_start_ms != Some(start)
            {
                if s.period_start_ms.is_some_and(|old| old < start) {
                    (s.prev_start_ms, s.prev_end_ms) = (s.period_start_ms, s.period_end_ms);
                }
                (s.period_start_ms, s.period_end_ms) = (Some(start), Some(end));
            }
            s.status_at_s = event.created_s;
        }
        BillingEffect::Invoice { outcome, .. } => {
            if s.payment_at_s.is_some_and(|t| t > event.created_s) {
                return (true, s);
            }
            s.payment = Some(outcome.clone());
            s.payment_at_s = Some(event.created_s);
            if newer && let Some(status) = invoice_status(outcome, s.status.as_deref()) {
                s.status = Some(status.to_owned());
                s.status_at_s = event.created_s;
            }
        }
        BillingEffect::Customer { .. } => {}
    }
    s.updated_ms = now_ms;
    (false, s)
}

impl Store {
    /// Applies one webhook event (see the module doc). `notices` turns the
    /// state change into outbox rows, written in the same transaction (none
    /// for a duplicate or a stale event).
    pub async fn apply_webhook(
        &self,
        event: &WebhookEvent,
        now_ms: i64,
        notices: &(dyn Fn(Option<&CustomerBilling>, &CustomerBilling) -> Vec<NewNotification> + Sync),
    ) -> Result<Applied> {
        const SEEN: &str = "SELECT 1 FROM stripe_webhook_events WHERE event_id = $1";
        const MAP: &str = "INSERT INTO tenants (id, stripe_customer_id, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET stripe_customer_id = excluded.stripe_customer_id \
             WHERE tenants.stripe_customer_id IS NULL";
        const UPSERT: &str = "INSERT INTO stripe_customers (customer_id, subscription_id, status, period_start_ms, \
             period_end_ms, prev_start_ms, prev_end_ms, status_at_s, payment, payment_at_s, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (customer_id) DO UPDATE SET \
             subscription_id = excluded.subscription_id, status = excluded.status, \
             period_start_ms = excluded.period_start_ms, period_end_ms = excluded.period_end_ms, \
             prev_start_ms = excluded.prev_start_ms, prev_end_ms = excluded.prev_end_ms, \
             status_at_s = excluded.status_at_s, payment = excluded.payment, payment_at_s = excluded.payment_at_s, \
             updated_ms = excluded.updated_ms";
        const RECORD: &str = "INSERT INTO stripe_webhook_events (event_id, type, created_s, customer_id, effect, received_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)";
        let customer = event.effect.customer();
        let select = format!(
            "SELECT {COLUMNS} FROM stripe_customers c LEFT JOIN tenants t ON t.stripe_customer_id = c.customer_id \
             WHERE c.customer_id = $1"
        );
        let result: std::result::Result<Applied, sqlx::Error> = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            if sqlx::query(SEEN).bind(&event.id).fetch_optional(&mut *tx).await?.is_some() {
                return Ok(Applied::Duplicate);
            }
            let mapped: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE stripe_customer_id = $1")
                .bind(customer)
                .fetch_optional(&mut *tx)
                .await?;
            if mapped.is_none()
                && let Some(hint) = event.effect.tenant_hint()
            {
                sqlx::query(MAP).bind(hint).bind(customer).bind(now_ms).execute(&mut *tx).await?;
            }
            let before = sqlx::query_as::<_, CustomerBilling>(sqlx::AssertSqlSafe(select.as_str()))
                .bind(customer)
                .fetch_optional(&mut *tx)
                .await?;
            let tenant: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE stripe_customer_id = $1")
                .bind(customer)
                .fetch_optional(&mut *tx)
                .await?;
            let (stale, mut after) = next_state(event, before.as_ref(), now_ms);
            after.tenant = tenant;
            let effect = if stale { "stale" } else { "applied" };
            if !stale && !matches!(event.effect, BillingEffect::Customer { .. }) {
                sqlx::query(UPSERT)
                    .bind(&after.customer_id)
                    .bind(&after.subscription_id)
                    .bind(&after.status)
                    .bind(after.period_start_ms)
                    .bind(after.period_end_ms)
                    .bind(after.prev_start_ms)
                    .bind(after.prev_end_ms)
                    .bind(after.status_at_s)
                    .bind(&after.payment)
                    .bind(after.payment_at_s)
                    .bind(after.updated_ms)
                    .execute(&mut *tx)
                    .await?;
                for n in notices(before.as_ref(), &after) {
                    sqlx::query(crate::alerts::OUTBOX_INSERT)
                        .bind(&n.receiver)
                        .bind(&n.fingerprint)
                        .bind(&n.payload)
                        .bind(n.created_ms)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            sqlx::query(RECORD)
                .bind(&event.id)
                .bind(&event.kind)
                .bind(event.created_s)
                .bind(customer)
                .bind(effect)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Applied::Done { stale, before: before.map(Box::new), after: Box::new(after) })
        });
        match result {
            // Another replica applied the same event meanwhile.
            Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => Ok(Applied::Duplicate),
            r => Ok(r?),
        }
    }

    /// Customers' billing states changed at or after `since_ms` (0: all).
    pub async fn customer_billing(&self, since_ms: i64) -> Result<Vec<CustomerBilling>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM stripe_customers c LEFT JOIN tenants t ON t.stripe_customer_id = c.customer_id \
             WHERE c.updated_ms >= $1 ORDER BY c.customer_id"
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, CustomerBilling>(sqlx::AssertSqlSafe(sql.as_str())).bind(since_ms).fetch_all(pool).await
        })?;
        Ok(rows)
    }

    /// The billing state of `tenant`'s customer, if any.
    pub async fn tenant_billing(&self, tenant: &str) -> Result<Option<CustomerBilling>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM stripe_customers c JOIN tenants t ON t.stripe_customer_id = c.customer_id \
             WHERE t.id = $1"
        );
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, CustomerBilling>(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(tenant)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row)
    }

    /// Webhook events applied, newest first (for the operator).
    pub async fn webhook_events(&self, limit: i64) -> Result<Vec<(String, String, i64, Option<String>, String)>> {
        const SELECT: &str = "SELECT event_id, type, created_s, customer_id, effect FROM stripe_webhook_events \
             ORDER BY received_ms DESC, event_id LIMIT $1";
        let rows = on_pool!(self, |pool| {
            sqlx::query(SELECT)
                .bind(limit)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str, created_s: i64, status: &str, period: Option<(i64, i64)>) -> WebhookEvent {
        WebhookEvent {
            id: id.into(),
            kind: "customer.subscription.updated".into(),
            created_s,
            effect: BillingEffect::Subscription {
                customer: "cus_1".into(),
                subscription_id: "sub_1".into(),
                status: status.into(),
                period,
                tenant_hint: None,
            },
        }
    }

    fn invoice(created_s: i64, outcome: &str) -> WebhookEvent {
        WebhookEvent {
            id: "evt_i".into(),
            kind: format!("invoice.{outcome}"),
            created_s,
            effect: BillingEffect::Invoice { customer: "cus_1".into(), outcome: outcome.into(), tenant_hint: None },
        }
    }

    #[test]
    fn an_older_event_never_overwrites_a_newer_state() {
        let (_, s) = next_state(&sub("a", 100, "active", Some((0, 10))), None, 1);
        let (stale, t) = next_state(&sub("b", 99, "trialing", Some((0, 10))), Some(&s), 2);
        assert!(stale);
        assert_eq!(t.status.as_deref(), Some("active"));
        let (stale, t) = next_state(&sub("c", 100, "past_due", None), Some(&s), 3);
        assert!(!stale, "the same second applies");
        assert_eq!((t.status.as_deref(), t.period_start_ms), (Some("past_due"), Some(0)));
    }

    #[test]
    fn a_new_period_keeps_the_previous_one() {
        let (_, s) = next_state(&sub("a", 100, "active", Some((0, 10))), None, 1);
        let (_, t) = next_state(&sub("b", 200, "active", Some((10, 20))), Some(&s), 2);
        assert_eq!((t.prev_start_ms, t.prev_end_ms, t.period_start_ms), (Some(0), Some(10), Some(10)));
    }

    #[test]
    fn invoices_move_a_live_status_until_the_subscription_says_more() {
        let (_, s) = next_state(&sub("a", 100, "active", None), None, 1);
        let (_, t) = next_state(&invoice(110, "payment_failed"), Some(&s), 2);
        assert_eq!((t.status.as_deref(), t.payment.as_deref()), (Some("past_due"), Some("payment_failed")));
        let (_, u) = next_state(&invoice(120, "paid"), Some(&t), 3);
        assert_eq!(u.status.as_deref(), Some("active"));
        // A late invoice does not undo a newer subscription state.
        let (_, v) = next_state(&sub("c", 130, "canceled", None), Some(&u), 4);
        let (_, w) = next_state(&invoice(125, "paid"), Some(&v), 5);
        assert_eq!(w.status.as_deref(), Some("canceled"));
        // Nor does an older invoice outcome replace a newer one.
        let (stale, _) = next_state(&invoice(115, "payment_failed"), Some(&w), 6);
        assert!(stale);
    }
}
