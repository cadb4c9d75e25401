//! A bound on how deeply recursive values (`Value::Array`, `Filter::And`/`Or`) may nest when
//! they are decoded — from a peer's message, the log or the state — so a crafted frame cannot
//! exhaust the stack. Anything a client can make is far shallower: query parsing refuses more
//! than `query::MAX_DEPTH` levels of `and`/`or`, and column values are scalars or flat arrays.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::cell::Cell;

/// Levels of nesting a decoder accepts.
pub const MAX_NESTING: u32 = 64;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

struct Level;

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// `deserialize_with` for a recursive field: one level deeper, refused past `MAX_NESTING`.
pub(crate) fn nested<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let depth = DEPTH.with(|c| {
        let n = c.get() + 1;
        c.set(n);
        n
    });
    let _level = Level;
    if depth > MAX_NESTING {
        return Err(D::Error::custom(format!(
            "nested more than {MAX_NESTING} levels deep"
        )));
    }
    T::deserialize(d)
}

#[cfg(test)]
mod tests {
    use crate::query::Filter;
    use crate::Value;

    #[test]
    fn decoding_refuses_values_nested_past_the_bound() {
        let mut v = Value::Int(1);
        for _ in 0..super::MAX_NESTING {
            v = Value::Array(vec![v]);
        }
        let ok = bincode::serialize(&v).unwrap();
        assert_eq!(bincode::deserialize::<Value>(&ok).unwrap(), v);
        let deeper = bincode::serialize(&Value::Array(vec![v])).unwrap();
        assert!(bincode::deserialize::<Value>(&deeper).is_err());
        // A crafted frame: a million `Array` tags, far past any stack.
        let mut bomb = Vec::new();
        for _ in 0..1_000_000 {
            bomb.extend_from_slice(&5u32.to_le_bytes());
            bomb.extend_from_slice(&1u64.to_le_bytes());
        }
        assert!(bincode::deserialize::<Value>(&bomb).is_err());
        let mut f = Filter::IsNull("a".into());
        for _ in 0..100 {
            f = Filter::And(vec![f]);
        }
        let bytes = bincode::serialize(&f).unwrap();
        assert!(bincode::deserialize::<Filter>(&bytes).is_err());
        // The guard unwinds: a shallow value decodes after a refused one.
        assert!(bincode::deserialize::<Value>(&ok).is_ok());
        // An audited auth operation wraps one operation; nested ones are bounded too.
        use crate::command::AuthOp;
        let wrap = |op: AuthOp| AuthOp::Audited {
            op: Box::new(op),
            id: "l".into(),
            ip: String::new(),
            user_agent: String::new(),
        };
        let one = wrap(AuthOp::DeleteUser { id: "u".into() });
        let bytes = bincode::serialize(&one).unwrap();
        assert_eq!(bincode::deserialize::<AuthOp>(&bytes).unwrap(), one);
        let mut deep = one;
        for _ in 0..100 {
            deep = wrap(deep);
        }
        assert!(bincode::deserialize::<AuthOp>(&bincode::serialize(&deep).unwrap()).is_err());
        let tag = &bytes[..4];
        let bomb: Vec<u8> = tag.iter().copied().cycle().take(4 * 1_000_000).collect();
        assert!(bincode::deserialize::<AuthOp>(&bomb).is_err());
    }
}
