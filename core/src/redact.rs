//! Secrets out of what tally logs and prints: URLs lose their userinfo and
//! query string (webhook URLs often carry a token there).

/// `url` with its userinfo and query string (and fragment) replaced by
/// `[redacted]`; text that is not a URL comes back unchanged.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority_and_path, query) = match rest.find(['?', '#']) {
        Some(at) => (&rest[..at], Some(&rest[at..at + 1])),
        None => (rest, None),
    };
    let (authority, path) = match authority_and_path.find('/') {
        Some(at) => authority_and_path.split_at(at),
        None => (authority_and_path, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("[redacted]@{host}"),
        None => authority.to_owned(),
    };
    let query = query.map_or(String::new(), |sep| format!("{sep}[redacted]"));
    format!("{scheme}://{host}{path}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_queries_are_redacted() {
        assert_eq!(url("https://hooks.example.com/in?token=s3cret&x=1"), "https://hooks.example.com/in?[redacted]");
        assert_eq!(
            url("https://user:pw@h.example.com:8443/p#frag"),
            "https://[redacted]@h.example.com:8443/p#[redacted]"
        );
        assert_eq!(url("http://127.0.0.1:9099/hook"), "http://127.0.0.1:9099/hook");
        assert_eq!(url("https://h.example.com?k=v"), "https://h.example.com?[redacted]");
        assert_eq!(url("not a url"), "not a url");
    }
}
