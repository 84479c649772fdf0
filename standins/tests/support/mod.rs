//! Helpers shared by the Stripe stand-in tests.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use tally_standins::stripe::{FakeStripe, MeterSpec, StripeConfig};

pub const KEY: &str = "sk_test_standins_0001";

pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl Client {
    pub fn new(stripe: &FakeStripe) -> Self {
        Client { http: reqwest::Client::new(), base: stripe.url() }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Answer { status, headers, body }
    }

    pub fn post_req(&self, path: &str, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form(pairs))
    }

    pub async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Answer {
        self.send(self.post_req(path, pairs)).await
    }

    pub async fn get(&self, path_and_query: &str) -> Answer {
        self.send(self.http.get(format!("{}{path_and_query}", self.base)).bearer_auth(KEY)).await
    }

    pub async fn event(&self, name: &str, customer: &str, value: &str, id: &str, ts: i64) -> Answer {
        let ts = ts.to_string();
        self.post(
            "/v1/billing/meter_events",
            &[
                ("event_name", name),
                ("payload[stripe_customer_id]", customer),
                ("payload[value]", value),
                ("identifier", id),
                ("timestamp", &ts),
            ],
        )
        .await
    }
}

pub async fn start(specs: &[MeterSpec]) -> FakeStripe {
    let mut config = StripeConfig { processing_time: Duration::ZERO, ..StripeConfig::default() };
    config.meters = specs.to_vec();
    FakeStripe::start(config).await.expect("start")
}

pub fn hour_start(ts: i64) -> i64 {
    ts - ts.rem_euclid(3600)
}
