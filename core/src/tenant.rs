use std::{fmt, sync::Arc};

/// A tenant identifier: 1 to 128 bytes of ASCII letters, digits and `._-:@`.
///
/// The alphabet is narrow on purpose: tenants become Hive partition names in
/// the Parquet lake and label values in dashboards, so they must be safe in a
/// path and a URL without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

pub const MAX_TENANT_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("tenant is empty")]
    Empty,
    #[error("tenant is longer than {MAX_TENANT_LEN} bytes")]
    TooLong,
    #[error("tenant contains {0:?}; allowed are ASCII letters, digits and . _ - : @")]
    InvalidChar(char),
}

impl TenantId {
    pub fn parse(s: &str) -> Result<TenantId, TenantError> {
        if s.is_empty() {
            return Err(TenantError::Empty);
        }
        if s.len() > MAX_TENANT_LEN {
            return Err(TenantError::TooLong);
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@'))) {
            return Err(TenantError::InvalidChar(c));
        }
        Ok(TenantId(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_ids() {
        for ok in ["acme", "tenant-42", "org_7", "a.b:c@d", &"x".repeat(128)] {
            assert_eq!(TenantId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_unsafe_ids() {
        assert_eq!(TenantId::parse(""), Err(TenantError::Empty));
        assert_eq!(TenantId::parse(&"x".repeat(129)), Err(TenantError::TooLong));
        assert_eq!(TenantId::parse("a/b"), Err(TenantError::InvalidChar('/')));
        assert_eq!(TenantId::parse("é"), Err(TenantError::InvalidChar('é')));
        assert_eq!(TenantId::parse("a b"), Err(TenantError::InvalidChar(' ')));
    }
}
