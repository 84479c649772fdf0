//! Reading a remote server's answer without trusting its size.

/// At most `limit` bytes of `resp`'s body, as text (lossy UTF-8), read
/// chunk by chunk: a server cannot make tally buffer more than that.
pub async fn read_prefix(mut resp: reqwest::Response, limit: usize) -> String {
    let mut out: Vec<u8> = Vec::new();
    while out.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
