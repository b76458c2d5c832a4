//! Keeps label cardinality bounded: every distinct label value is a time
//! series in Prometheus, so values that grow with use (tenants) are capped.

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock};

/// The value reported once a label has seen its maximum of distinct values.
pub const OVERFLOW: &str = "other";

/// Distinct values a label may take, first come first served; later ones
/// are reported as [`OVERFLOW`].
#[derive(Debug)]
pub struct BoundedValues {
    seen: RwLock<HashSet<String>>,
    limit: usize,
}

impl BoundedValues {
    /// A label that keeps at most `limit` distinct values.
    pub fn new(limit: usize) -> Self {
        Self {
            seen: RwLock::new(HashSet::new()),
            limit,
        }
    }

    /// `value` itself while there is room for it, else [`OVERFLOW`].
    pub fn admit(&self, value: &str) -> String {
        if self
            .seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(value)
        {
            return value.to_owned();
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(value) || seen.len() < self.limit {
            seen.insert(value.to_owned());
            value.to_owned()
        } else {
            OVERFLOW.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_limit_share_one_series() {
        let tenants = BoundedValues::new(2);
        assert_eq!(tenants.admit("a"), "a");
        assert_eq!(tenants.admit("b"), "b");
        assert_eq!(tenants.admit("c"), OVERFLOW);
        assert_eq!(tenants.admit("a"), "a", "known values keep their series");
    }
}
