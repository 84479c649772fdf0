//! Request bodies and signatures: Alertmanager's webhook payload (version
//! "4"), PagerDuty Events API v2, and the Standard Webhooks signature.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use tally_core::alert::{Notification, NotificationStatus};

/// Alertmanager's "zero" time, sent as `endsAt` of a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The group labels of a notification: the rule and the tenant (one group
/// per alert instance's rule and tenant).
fn group_labels(n: &Notification) -> BTreeMap<&str, &str> {
    BTreeMap::from([("alertname", n.rule.as_str()), ("tenant", n.tenant.as_str())])
}

/// Alertmanager's webhook body (version "4") with this one alert, so
/// existing on-call bridges accept it.
pub fn alertmanager(n: &Notification, receiver: &str, external_url: &str) -> Value {
    let group = group_labels(n);
    let group_key =
        format!("{{}}:{{{}}}", group.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(", "));
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": n.status.as_str(),
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": n.labels,
        "commonAnnotations": n.annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": n.status.as_str(),
            "labels": n.labels,
            "annotations": n.annotations,
            "startsAt": rfc3339(n.starts_at_ms),
            "endsAt": n.ends_at_ms.map_or_else(|| ZERO_TIME.to_owned(), rfc3339),
            "generatorURL": n.generator_url,
            "fingerprint": n.fingerprint,
        }],
    })
}

/// PagerDuty Events API v2: trigger (again on a severity change, same
/// `dedup_key`) or resolve.
pub fn pagerduty(n: &Notification, routing_key: &str) -> Value {
    let action = match n.status {
        NotificationStatus::Firing => "trigger",
        NotificationStatus::Resolved => "resolve",
    };
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": n.fingerprint,
        "client": "tally",
        "client_url": n.generator_url,
    });
    if n.status == NotificationStatus::Firing {
        let summary = n.annotations.get("summary").cloned().unwrap_or_else(|| format!("{} ({})", n.rule, n.tenant));
        body["payload"] = json!({
            // PagerDuty's limit is 1024 characters.
            "summary": summary.chars().take(1024).collect::<String>(),
            "source": format!("tally/{}", n.tenant),
            "severity": n.severity.as_str(),
            "timestamp": rfc3339(n.at_ms),
            "group": n.tenant,
            "class": n.rule,
            "custom_details": {
                "labels": n.labels,
                "annotations": n.annotations,
                "value": n.value,
                "threshold": n.threshold,
            },
        });
    }
    body
}

/// The Standard Webhooks headers for `body`: `webhook-id`,
/// `webhook-timestamp` (Unix seconds) and `webhook-signature`
/// (`v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`).
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2_hmac::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::alert::Severity;

    /// The example of the Standard Webhooks specification (and its
    /// reference libraries' tests).
    #[test]
    fn signature_matches_the_specification_example() {
        let key = crate::alerts::receiver::signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    fn note(status: NotificationStatus) -> Notification {
        Notification {
            status,
            rule: "HighErrorRate".into(),
            tenant: "acme".into(),
            severity: Severity::Critical,
            value: Some(0.07),
            threshold: Some(0.05),
            labels: BTreeMap::from([
                ("alertname".into(), "HighErrorRate".into()),
                ("severity".into(), "critical".into()),
                ("tenant".into(), "acme".into()),
            ]),
            annotations: BTreeMap::from([("summary".into(), "errors".into())]),
            fingerprint: "0123456789abcdef".into(),
            starts_at_ms: 1_795_334_400_000,
            ends_at_ms: (status == NotificationStatus::Resolved).then_some(1_795_334_460_000),
            generator_url: "http://tally/v1/alerts?tenant=acme".into(),
            at_ms: 1_795_334_460_000,
        }
    }

    #[test]
    fn bodies_have_the_fields_receivers_expect() {
        let b = alertmanager(&note(NotificationStatus::Firing), "oncall", "http://tally");
        assert_eq!(b["version"], "4");
        assert_eq!(b["groupLabels"], json!({"alertname": "HighErrorRate", "tenant": "acme"}));
        assert_eq!(b["alerts"][0]["startsAt"], "2026-11-22T08:00:00.000Z");
        assert_eq!(b["alerts"][0]["endsAt"], ZERO_TIME);
        let r = alertmanager(&note(NotificationStatus::Resolved), "oncall", "http://tally");
        assert_eq!(
            (r["status"].as_str(), r["alerts"][0]["endsAt"].as_str()),
            (Some("resolved"), Some("2026-11-22T08:01:00.000Z"))
        );
        let p = pagerduty(&note(NotificationStatus::Firing), "key");
        assert_eq!((p["event_action"].as_str(), p["dedup_key"].as_str()), (Some("trigger"), Some("0123456789abcdef")));
        assert_eq!(p["payload"]["severity"], "critical");
        let p = pagerduty(&note(NotificationStatus::Resolved), "key");
        assert_eq!(p["event_action"], "resolve");
        assert!(p.get("payload").is_none());
    }
}
