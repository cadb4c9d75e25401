//! Update operators (Appwrite 1.8+): a column's new value computed from its current value
//! when the write applies, so concurrent updates compose instead of overwriting each other
//! (`increment`, `arrayAppend`, `toggle`, ...). An SDK sends one in place of a value, as a
//! JSON string: `{"method":"arrayAppend","values":[4]}`.
//!
//! Parsing happens where the request arrives (`Operator::detect`); checking against the
//! column and computing the value happen inside apply (`Operator::apply`), against the row as
//! the log has it, so the result is the same on every replica. Limits given with the numeric
//! operators clamp, as Appwrite 1.8.1–1.9.6 do. Unlike Appwrite, the result is checked like
//! any written value (column range, size, format), and integer arithmetic is 64-bit.

use crate::error::Message;
use crate::msg;
use crate::schema::{AttrKind, Attribute};
use crate::time;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// The operators of one write, by column key.
pub type Ops = BTreeMap<String, Operator>;

/// Items one array operator may carry, at most (Appwrite's cap).
pub const MAX_ARRAY_VALUES: usize = 10_000;

/// The conditions `arrayFilter` understands.
const FILTER_CONDITIONS: &[&str] = &[
    "equal",
    "notEqual",
    "greaterThan",
    "greaterThanEqual",
    "lessThan",
    "lessThanEqual",
    "isNull",
    "isNotNull",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Increment,
    Decrement,
    Multiply,
    Divide,
    Modulo,
    Power,
    ArrayAppend,
    ArrayPrepend,
    ArrayInsert,
    ArrayRemove,
    ArrayUnique,
    ArrayIntersect,
    ArrayDiff,
    ArrayFilter,
    StringConcat,
    StringReplace,
    Toggle,
    DateAddDays,
    DateSubDays,
    DateSetNow,
}

const METHODS: &[(&str, Method)] = &[
    ("increment", Method::Increment),
    ("decrement", Method::Decrement),
    ("multiply", Method::Multiply),
    ("divide", Method::Divide),
    ("modulo", Method::Modulo),
    ("power", Method::Power),
    ("arrayAppend", Method::ArrayAppend),
    ("arrayPrepend", Method::ArrayPrepend),
    ("arrayInsert", Method::ArrayInsert),
    ("arrayRemove", Method::ArrayRemove),
    ("arrayUnique", Method::ArrayUnique),
    ("arrayIntersect", Method::ArrayIntersect),
    ("arrayDiff", Method::ArrayDiff),
    ("arrayFilter", Method::ArrayFilter),
    ("stringConcat", Method::StringConcat),
    ("stringReplace", Method::StringReplace),
    ("toggle", Method::Toggle),
    ("dateAddDays", Method::DateAddDays),
    ("dateSubDays", Method::DateSubDays),
    ("dateSetNow", Method::DateSetNow),
];

impl Method {
    pub fn parse(name: &str) -> Option<Method> {
        METHODS.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    pub fn name(self) -> &'static str {
        METHODS
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("")
    }

    fn numeric(self) -> bool {
        use Method::*;
        matches!(
            self,
            Increment | Decrement | Multiply | Divide | Modulo | Power
        )
    }
}

/// One operator: its method and its arguments as the client sent them (checked when it
/// applies, against the column).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operator {
    pub method: Method,
    pub values: Vec<Value>,
}

/// A JSON type's name, for messages.
fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "NULL",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_f64() => "double",
        serde_json::Value::Number(_) => "integer",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::Float(_) => "double",
        Value::Str(_) => "string",
        Value::Array(_) => "array",
    }
}

/// A value's identity for the array operators' set operations: equal as queries compare
/// (`1` is `1.0`), hashable.
#[derive(Hash, PartialEq, Eq)]
enum Key {
    Null,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(String),
    Array(Vec<Key>),
}

/// -2^63, exactly (every whole float in [-2^63, 2^63) is an i64).
const I64_LOW: f64 = i64::MIN as f64;

impl Key {
    fn of(v: &Value) -> Key {
        match v {
            Value::Null => Key::Null,
            Value::Bool(b) => Key::Bool(*b),
            Value::Int(i) => Key::Int(*i),
            // A whole float within i64's range is the integer it equals (-0.0 is 0).
            Value::Float(f) if f.fract() == 0.0 && (I64_LOW..-I64_LOW).contains(f) => {
                Key::Int(*f as i64)
            }
            Value::Float(f) => Key::Float(f.to_bits()),
            Value::Str(s) => Key::Str(s.clone()),
            Value::Array(a) => Key::Array(a.iter().map(Key::of).collect()),
        }
    }
}

/// `c / b` rounded half away from zero (as MySQL stores a decimal into an integer column).
fn divide_rounded(c: i128, b: i128) -> i128 {
    let (q, r) = (c / b, c % b);
    match 2 * r.abs() >= b.abs() {
        true if (c < 0) != (b < 0) => q - 1,
        true => q + 1,
        false => q,
    }
}

impl Operator {
    /// Whether a data value is an operator, as Appwrite tells: a string holding JSON (or an
    /// object) with a `method` it knows. `None`: an ordinary value. `Some(Err)`: an operator
    /// that cannot be read (its `values` not a list, or holding objects).
    pub fn detect(v: &serde_json::Value) -> Option<Result<Operator, Message>> {
        let parsed;
        let obj = match v {
            serde_json::Value::String(s) if s.trim_start().starts_with('{') => {
                parsed = serde_json::from_str::<serde_json::Value>(s).ok()?;
                parsed.as_object()?
            }
            serde_json::Value::Object(o) => o,
            _ => return None,
        };
        let method = Method::parse(obj.get("method")?.as_str()?)?;
        Some(Self::from_parts(method, obj))
    }

    fn from_parts(
        method: Method,
        obj: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Operator, Message> {
        if let Some(a) = obj.get("attribute") {
            if !a.is_string() {
                return Err(msg!(
                    "Invalid operator attribute. Must be a string, got {}",
                    json_type(a)
                ));
            }
        }
        let values = match obj.get("values") {
            None => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(Value::from_json)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    Message::from("Invalid operator values. Values must not hold objects")
                })?,
            Some(other) => {
                return Err(msg!(
                    "Invalid operator values. Must be an array, got {}",
                    json_type(other)
                ))
            }
        };
        Ok(Operator { method, values })
    }

    /// The operator as an SDK sends it (what a staged write echoes back).
    pub fn to_wire(&self) -> String {
        serde_json::json!({
            "method": self.method.name(),
            "values": self.values.iter().map(Value::to_json).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// The column's new value. `current` is its value now, `None` when the row is being
    /// created (an upsert that found none: the column's default, or zero, empty, false, is
    /// the start). `now` is the write's time (for `dateSetNow`). The caller checks the result
    /// like any written value.
    pub fn apply(
        &self,
        attr: &Attribute,
        current: Option<&Value>,
        now: i64,
    ) -> Result<Value, Message> {
        let m = self.method;
        let start = match current {
            Some(v) => v.clone(),
            None => attr.default.clone().unwrap_or(Value::Null),
        };
        if m.numeric() {
            return self.numeric(attr, &start);
        }
        use Method::*;
        match m {
            ArrayAppend | ArrayPrepend | ArrayInsert | ArrayRemove | ArrayUnique
            | ArrayIntersect | ArrayDiff | ArrayFilter => self.array(attr, start),
            StringConcat | StringReplace => self.string(attr, start),
            Toggle => {
                if attr.kind != AttrKind::Boolean || attr.array {
                    return Err(self.wrong_type(attr, "non-boolean"));
                }
                match start {
                    Value::Bool(b) => Ok(Value::Bool(!b)),
                    _ => Ok(Value::Bool(true)),
                }
            }
            DateAddDays | DateSubDays | DateSetNow => self.date(attr, start, now),
            _ => unreachable!("numeric methods return above"),
        }
    }

    fn wrong_type(&self, attr: &Attribute, what: &str) -> Message {
        msg!(
            "Cannot apply {} operator to {} field '{}'",
            self.method.name(),
            what,
            attr.key
        )
    }

    fn fail(&self, why: &str) -> Message {
        msg!("Cannot apply {} operator: {}", self.method.name(), why)
    }

    fn numeric(&self, attr: &Attribute, start: &Value) -> Result<Value, Message> {
        use Method::*;
        let m = self.method;
        let integer = matches!(attr.kind, AttrKind::Integer | AttrKind::Bigint);
        if attr.array || !(integer || attr.kind == AttrKind::Float) {
            return Err(self.wrong_type(attr, "non-numeric"));
        }
        let number = |v: &Value| -> Option<Value> {
            match v {
                Value::Int(_) | Value::Float(_) => Some(v.clone()),
                Value::Str(s) => match s.trim().parse::<i64>() {
                    Ok(i) => Some(Value::Int(i)),
                    // Numerals only: not "inf" or "NaN".
                    Err(_) => s
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(Value::Float),
                },
                _ => None,
            }
        };
        let by = match self.values.first() {
            None if matches!(m, Increment | Decrement) => Value::Int(1),
            None => return Err(self.fail("value must be numeric, got NULL")),
            Some(v) => number(v).ok_or_else(|| {
                self.fail(&format!("value must be numeric, got {}", value_type(v)))
            })?,
        };
        let limit = match self.values.get(1) {
            None | Some(Value::Null) => None,
            Some(v) => Some(number(v).ok_or_else(|| {
                self.fail(&format!(
                    "max/min limit must be numeric, got {}",
                    value_type(v)
                ))
            })?),
        };
        let b = by.as_f64().unwrap_or(0.0);
        if b == 0.0 && matches!(m, Divide | Modulo) {
            let what = if m == Divide { "division" } else { "modulo" };
            return Err(self.fail(&format!("{what} by zero")));
        }
        let cur = match start {
            Value::Int(_) | Value::Float(_) => start.clone(),
            _ => Value::Int(0),
        };
        let c = cur.as_f64().unwrap_or(0.0);
        // The exact result where both sides are integers, in i128 (no operation on two i64
        // overflows it but a power, which is checked).
        let exact: Option<i128> = match (integer, &cur, &by) {
            (true, Value::Int(c), Value::Int(b)) => {
                let (c, b) = (*c as i128, *b as i128);
                match m {
                    Increment => Some(c + b),
                    Decrement => Some(c - b),
                    Multiply => Some(c * b),
                    Modulo => Some(c % b),
                    Divide => Some(divide_rounded(c, b)),
                    _ => u32::try_from(b).ok().and_then(|e| c.checked_pow(e)),
                }
            }
            _ => None,
        };
        let real = match m {
            Increment => c + b,
            Decrement => c - b,
            Multiply => c * b,
            Divide => c / b,
            Modulo => c % b,
            // A software pow: the same bits on every replica, whatever its maths library.
            _ => libm::pow(c, b),
        };
        // A limit clamps: a maximum for the growing methods, a minimum for the others.
        let upper = matches!(m, Increment | Multiply | Power);
        if let Some(l) = &limit {
            let lf = l.as_f64().unwrap_or(0.0);
            let past = match (exact, l) {
                (Some(i), Value::Int(li)) if upper => i > *li as i128,
                (Some(i), Value::Int(li)) => i < *li as i128,
                _ if upper => real > lf,
                _ => real < lf,
            };
            if past && m != Modulo {
                // On an integer column, the nearest integer on the limit's side of it.
                return Ok(match (integer, l) {
                    (true, Value::Int(li)) => Value::Int(*li),
                    (true, _) if upper => Value::Int(lf.floor() as i64),
                    (true, _) => Value::Int(lf.ceil() as i64),
                    (false, _) => Value::Float(lf),
                });
            }
        }
        if integer {
            if let Some(i) = exact {
                return match i64::try_from(i) {
                    Ok(i) => Ok(Value::Int(i)),
                    Err(_) if i > 0 => {
                        Err(self.fail(&format!("would overflow maximum value of {}", i64::MAX)))
                    }
                    Err(_) => {
                        Err(self.fail(&format!("would underflow minimum value of {}", i64::MIN)))
                    }
                };
            }
            // Not exact: a non-integer operand, a division or a negative power; rounded as
            // MySQL stores a decimal into an integer column.
            let r = real.round();
            if r.is_nan() {
                return Err(self.fail("the result is not a number"));
            }
            if r >= 9.223_372_036_854_775e18 {
                return Err(self.fail(&format!("would overflow maximum value of {}", i64::MAX)));
            }
            if r < -9.223_372_036_854_775e18 {
                return Err(self.fail(&format!("would underflow minimum value of {}", i64::MIN)));
            }
            return Ok(Value::Int(r as i64));
        }
        if !real.is_finite() {
            return Err(self.fail("the result is not a finite number"));
        }
        Ok(Value::Float(real))
    }

    fn array(&self, attr: &Attribute, start: Value) -> Result<Value, Message> {
        use Method::*;
        let m = self.method;
        if !attr.array {
            return Err(match m {
                ArrayIntersect | ArrayDiff => msg!(
                    "Cannot use {} operator on non-array attribute '{}'",
                    m.name(),
                    attr.key
                ),
                _ => self.wrong_type(attr, "non-array"),
            });
        }
        if self.values.len() > MAX_ARRAY_VALUES
            && matches!(
                m,
                ArrayAppend | ArrayPrepend | ArrayIntersect | ArrayDiff | ArrayRemove
            )
        {
            return Err(msg!(
                "Array size {} exceeds maximum allowed size of {} for array operations",
                self.values.len(),
                MAX_ARRAY_VALUES
            ));
        }
        let mut items = match start {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        // Set operations hash a canonical form of each item: linear in the array's length.
        match m {
            ArrayAppend => items.extend(self.values.iter().cloned()),
            ArrayPrepend => {
                let mut front = self.values.clone();
                front.append(&mut items);
                items = front;
            }
            ArrayInsert => {
                if self.values.len() != 2 {
                    return Err(self.fail("requires exactly 2 values (index and value)"));
                }
                let index = match &self.values[0] {
                    Value::Int(i) if *i >= 0 => *i as u64,
                    _ => return Err(self.fail("index must be a non-negative integer")),
                };
                if index > items.len() as u64 {
                    return Err(self.fail(&format!(
                        "index {index} is out of bounds for array of length {}",
                        items.len()
                    )));
                }
                items.insert(index as usize, self.values[1].clone());
            }
            ArrayRemove => {
                let Some(gone) = self.values.first() else {
                    return Err(self.fail("requires a value to remove"));
                };
                let gone = Key::of(gone);
                items.retain(|v| Key::of(v) != gone);
            }
            ArrayUnique => {
                let mut seen = HashSet::with_capacity(items.len());
                items.retain(|v| seen.insert(Key::of(v)));
            }
            ArrayIntersect => {
                if self.values.is_empty() {
                    return Err(msg!(
                        "arrayIntersect operator requires a non-empty array value"
                    ));
                }
                let keep: HashSet<Key> = self.values.iter().map(Key::of).collect();
                items.retain(|v| keep.contains(&Key::of(v)));
            }
            ArrayDiff => {
                let drop: HashSet<Key> = self.values.iter().map(Key::of).collect();
                items.retain(|v| !drop.contains(&Key::of(v)));
            }
            _ => {
                let keep = self.filter()?;
                items.retain(|v| keep(v));
            }
        }
        Ok(Value::Array(items))
    }

    /// `arrayFilter`'s test for one item.
    fn filter(&self) -> Result<impl Fn(&Value) -> bool + '_, Message> {
        if self.values.is_empty() || self.values.len() > 2 {
            return Err(
                self.fail("requires 1 or 2 values (condition and optional comparison value)")
            );
        }
        let Value::Str(cond) = &self.values[0] else {
            return Err(self.fail("condition must be a string"));
        };
        if !FILTER_CONDITIONS.contains(&cond.as_str()) {
            return Err(msg!(
                "Invalid array filter condition '{}'. Must be one of: {}",
                cond,
                FILTER_CONDITIONS.join(", ")
            ));
        }
        let with = self.values.get(1).cloned().unwrap_or(Value::Null);
        Ok(move |v: &Value| {
            use std::cmp::Ordering::*;
            let o = v.total_cmp(&with);
            match cond.as_str() {
                "equal" => o == Equal,
                "notEqual" => o != Equal,
                "greaterThan" => o == Greater,
                "greaterThanEqual" => o != Less,
                "lessThan" => o == Less,
                "lessThanEqual" => o != Greater,
                "isNull" => v.is_null(),
                _ => !v.is_null(),
            }
        })
    }

    fn string(&self, attr: &Attribute, start: Value) -> Result<Value, Message> {
        let stringy = !matches!(
            attr.kind,
            AttrKind::Integer
                | AttrKind::Bigint
                | AttrKind::Float
                | AttrKind::Boolean
                | AttrKind::Datetime
        );
        if !stringy || attr.array {
            return Err(self.wrong_type(attr, "non-string"));
        }
        if self.method == Method::StringConcat {
            let Some(Value::Str(tail)) = self.values.first() else {
                return Err(self.fail("requires a string value"));
            };
            let mut s = match start {
                Value::Str(s) => s,
                _ => String::new(),
            };
            s.push_str(tail);
            if let Some(max) = attr.max_len() {
                if s.chars().count() as u64 > max {
                    return Err(self.fail(&format!(
                        "result would exceed maximum length of {max} characters"
                    )));
                }
            }
            return Ok(Value::Str(s));
        }
        let (Some(Value::Str(search)), Some(Value::Str(with)), 2) =
            (self.values.first(), self.values.get(1), self.values.len())
        else {
            return Err(self.fail("requires exactly 2 string values (search and replace)"));
        };
        Ok(match start {
            // An empty search matches nothing (as SQL's REPLACE).
            Value::Str(s) if !search.is_empty() => Value::Str(s.replace(search, with)),
            other => other,
        })
    }

    fn date(&self, attr: &Attribute, start: Value, now: i64) -> Result<Value, Message> {
        if attr.kind != AttrKind::Datetime || attr.array {
            return Err(self.wrong_type(attr, "non-datetime"));
        }
        if self.method == Method::DateSetNow {
            return Ok(Value::Str(time::format_ms(now)));
        }
        let Some(Value::Int(days)) = self.values.first() else {
            return Err(self.fail("requires an integer number of days"));
        };
        let Some(at) = start.as_str().and_then(time::parse_ms) else {
            // No date to move: it stays unset.
            return Ok(Value::Null);
        };
        let sign = if self.method == Method::DateSubDays {
            -1
        } else {
            1
        };
        let moved = days
            .checked_mul(86_400_000 * sign)
            .and_then(|d| at.checked_add(d))
            .map(time::format_ms)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.fail("the date would be out of range"))?;
        Ok(Value::Str(moved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(v: serde_json::Value) -> Operator {
        Operator::detect(&json!(v.to_string())).unwrap().unwrap()
    }

    fn col(kind: AttrKind, array: bool) -> Attribute {
        let mut a = Attribute::new("c", kind, 0);
        a.array = array;
        a
    }

    fn ints(v: &[i64]) -> Value {
        Value::Array(v.iter().map(|i| Value::Int(*i)).collect())
    }

    #[test]
    fn detection() {
        assert!(Operator::detect(&json!("plain text")).is_none());
        assert!(Operator::detect(&json!(5)).is_none());
        // An unknown method is an ordinary string, as in Appwrite.
        assert!(Operator::detect(&json!(r#"{"method":"foo","values":[]}"#)).is_none());
        let o = op(json!({"method": "arrayAppend", "values": [1, 2]}));
        assert_eq!(o.method, Method::ArrayAppend);
        assert_eq!(o.values, vec![Value::Int(1), Value::Int(2)]);
        // Sent as an object, and without values.
        let o = Operator::detect(&json!({"method": "toggle"}))
            .unwrap()
            .unwrap();
        assert_eq!(o.values, vec![]);
        let bad = Operator::detect(&json!(r#"{"method":"increment","values":5}"#)).unwrap();
        assert_eq!(
            bad.unwrap_err().text(),
            "Invalid operator values. Must be an array, got integer"
        );
        let bad = Operator::detect(&json!(r#"{"method":"increment","attribute":1}"#)).unwrap();
        assert!(bad
            .unwrap_err()
            .text()
            .contains("Must be a string, got integer"));
        // The wire form reads back the same.
        let o = op(json!({"method": "increment", "values": [5, 100]}));
        assert_eq!(op(serde_json::from_str(&o.to_wire()).unwrap()), o);
    }

    #[test]
    fn numeric() {
        let int = col(AttrKind::Integer, false);
        let float = col(AttrKind::Float, false);
        let apply = |o: serde_json::Value, a: &Attribute, cur: Value| op(o).apply(a, Some(&cur), 0);
        let inc = json!({"method": "increment", "values": [5]});
        assert_eq!(apply(inc.clone(), &int, Value::Int(10)), Ok(Value::Int(15)));
        assert_eq!(apply(inc.clone(), &int, Value::Null), Ok(Value::Int(5)));
        assert_eq!(
            apply(json!({"method": "increment"}), &int, Value::Int(1)),
            Ok(Value::Int(2))
        );
        // Limits clamp.
        let capped = json!({"method": "increment", "values": [100, 50]});
        assert_eq!(apply(capped, &int, Value::Int(10)), Ok(Value::Int(50)));
        let floor = json!({"method": "decrement", "values": [100, 0]});
        assert_eq!(apply(floor, &int, Value::Int(10)), Ok(Value::Int(0)));
        // Overflow without a limit is refused; with one it clamps.
        let huge = json!({"method": "increment", "values": [i64::MAX]});
        assert!(apply(huge, &int, Value::Int(1))
            .unwrap_err()
            .text()
            .contains("would overflow maximum value"));
        let huge = json!({"method": "multiply", "values": [i64::MAX, 1000]});
        assert_eq!(apply(huge, &int, Value::Int(3)), Ok(Value::Int(1000)));
        // Division rounds on an integer column, not on a float one.
        let div = json!({"method": "divide", "values": [2]});
        assert_eq!(apply(div.clone(), &int, Value::Int(5)), Ok(Value::Int(3)));
        assert_eq!(apply(div, &float, Value::Int(5)), Ok(Value::Float(2.5)));
        let zero = json!({"method": "modulo", "values": [0]});
        assert_eq!(
            apply(zero, &int, Value::Int(5)).unwrap_err().text(),
            "Cannot apply modulo operator: modulo by zero"
        );
        let m = json!({"method": "modulo", "values": [3]});
        assert_eq!(apply(m, &int, Value::Int(-7)), Ok(Value::Int(-1)));
        let p = json!({"method": "power", "values": [3]});
        assert_eq!(apply(p, &int, Value::Int(2)), Ok(Value::Int(8)));
        let s = json!({"method": "increment", "values": ["x"]});
        assert_eq!(
            apply(s, &int, Value::Int(2)).unwrap_err().text(),
            "Cannot apply increment operator: value must be numeric, got string"
        );
        let text = col(AttrKind::String, false);
        assert_eq!(
            apply(inc, &text, Value::Null).unwrap_err().text(),
            "Cannot apply increment operator to non-numeric field 'c'"
        );
        // Exact on 64-bit integers; an overflow past a limit clamps.
        let big = col(AttrKind::Bigint, false);
        let d = json!({"method": "divide", "values": [1]});
        let v = (1i64 << 60) + 1;
        assert_eq!(apply(d, &big, Value::Int(v)), Ok(Value::Int(v)));
        let d = json!({"method": "divide", "values": [-2]});
        assert_eq!(apply(d, &big, Value::Int(5)), Ok(Value::Int(-3)));
        let near = json!({"method": "increment", "values": [20, i64::MAX - 5]});
        assert_eq!(
            apply(near, &big, Value::Int(i64::MAX - 10)),
            Ok(Value::Int(i64::MAX - 5))
        );
        let d = json!({"method": "divide", "values": [-1]});
        assert!(apply(d, &big, Value::Int(i64::MIN)).is_err());
        let inf = json!({"method": "increment", "values": ["inf", 10]});
        assert!(apply(inf, &int, Value::Int(1)).is_err());
        let p = json!({"method": "power", "values": [0.5]});
        assert_eq!(apply(p, &float, Value::Float(9.0)), Ok(Value::Float(3.0)));
        // A new row starts from the default.
        let mut with_default = int.clone();
        with_default.default = Some(Value::Int(2020));
        let o = op(json!({"method": "increment", "values": [5]}));
        assert_eq!(o.apply(&with_default, None, 0), Ok(Value::Int(2025)));
    }

    #[test]
    fn arrays() {
        let arr = col(AttrKind::Integer, true);
        let apply = |o: serde_json::Value, cur: Value| op(o).apply(&arr, Some(&cur), 0);
        let app = json!({"method": "arrayAppend", "values": [3, 4]});
        assert_eq!(apply(app.clone(), ints(&[1, 2])), Ok(ints(&[1, 2, 3, 4])));
        assert_eq!(apply(app.clone(), Value::Null), Ok(ints(&[3, 4])));
        assert_eq!(op(app.clone()).apply(&arr, None, 0), Ok(ints(&[3, 4])));
        let pre = json!({"method": "arrayPrepend", "values": [0]});
        assert_eq!(apply(pre, ints(&[1])), Ok(ints(&[0, 1])));
        let ins = json!({"method": "arrayInsert", "values": [1, 9]});
        assert_eq!(apply(ins, ints(&[1, 2])), Ok(ints(&[1, 9, 2])));
        let end = json!({"method": "arrayInsert", "values": [2, 9]});
        assert_eq!(apply(end, ints(&[1, 2])), Ok(ints(&[1, 2, 9])));
        let far = json!({"method": "arrayInsert", "values": [10, 9]});
        assert_eq!(
            apply(far, ints(&[1, 2, 3])).unwrap_err().text(),
            "Cannot apply arrayInsert operator: index 10 is out of bounds for array of length 3"
        );
        let rm = json!({"method": "arrayRemove", "values": [2]});
        assert_eq!(apply(rm, ints(&[2, 1, 2, 3])), Ok(ints(&[1, 3])));
        let uniq = json!({"method": "arrayUnique", "values": []});
        assert_eq!(apply(uniq, ints(&[3, 1, 3, 2, 1])), Ok(ints(&[3, 1, 2])));
        let inter = json!({"method": "arrayIntersect", "values": [1, 3]});
        assert_eq!(apply(inter, ints(&[1, 2, 3, 1])), Ok(ints(&[1, 3, 1])));
        let diff = json!({"method": "arrayDiff", "values": [1]});
        assert_eq!(apply(diff, ints(&[1, 2, 1])), Ok(ints(&[2])));
        let gt = json!({"method": "arrayFilter", "values": ["greaterThan", 2]});
        assert_eq!(apply(gt, ints(&[1, 5, 2, 3])), Ok(ints(&[5, 3])));
        let bad = json!({"method": "arrayFilter", "values": ["contains", 2]});
        assert!(apply(bad, ints(&[1]))
            .unwrap_err()
            .text()
            .starts_with("Invalid array filter condition 'contains'"));
        let scalar = col(AttrKind::Integer, false);
        assert_eq!(
            op(app)
                .apply(&scalar, Some(&Value::Int(1)), 0)
                .unwrap_err()
                .text(),
            "Cannot apply arrayAppend operator to non-array field 'c'"
        );
    }

    #[test]
    fn strings_booleans_dates() {
        let mut text = col(AttrKind::String, false);
        text.size = Some(5);
        let cat = op(json!({"method": "stringConcat", "values": ["def"]}));
        assert_eq!(
            cat.apply(&text, Some(&Value::Str("ab".into())), 0),
            Ok(Value::Str("abdef".into()))
        );
        assert!(cat
            .apply(&text, Some(&Value::Str("abc".into())), 0)
            .unwrap_err()
            .text()
            .contains("maximum length of 5"));
        let rep = op(json!({"method": "stringReplace", "values": ["a", "x"]}));
        assert_eq!(
            rep.apply(&text, Some(&Value::Str("aba".into())), 0),
            Ok(Value::Str("xbx".into()))
        );
        let flag = col(AttrKind::Boolean, false);
        let t = op(json!({"method": "toggle", "values": []}));
        assert_eq!(
            t.apply(&flag, Some(&Value::Bool(true)), 0),
            Ok(Value::Bool(false))
        );
        assert_eq!(t.apply(&flag, Some(&Value::Null), 0), Ok(Value::Bool(true)));
        let date = col(AttrKind::Datetime, false);
        let add = op(json!({"method": "dateAddDays", "values": [2]}));
        let d = Value::Str("2026-01-30T10:00:00.000+00:00".into());
        assert_eq!(
            add.apply(&date, Some(&d), 0),
            Ok(Value::Str("2026-02-01T10:00:00.000+00:00".into()))
        );
        let sub = op(json!({"method": "dateSubDays", "values": [30]}));
        assert_eq!(
            sub.apply(&date, Some(&d), 0),
            Ok(Value::Str("2025-12-31T10:00:00.000+00:00".into()))
        );
        assert_eq!(add.apply(&date, Some(&Value::Null), 0), Ok(Value::Null));
        let now = op(json!({"method": "dateSetNow"}));
        assert_eq!(
            now.apply(&date, Some(&Value::Null), 0),
            Ok(Value::Str("1970-01-01T00:00:00.000+00:00".into()))
        );
        assert_eq!(
            add.apply(&flag, Some(&Value::Null), 0).unwrap_err().text(),
            "Cannot apply dateAddDays operator to non-datetime field 'c'"
        );
    }

    #[test]
    fn encodes_for_the_log() {
        let o = op(json!({"method": "arrayAppend", "values": [[1], "a", 2.5]}));
        let bytes = bincode::serialize(&o).unwrap();
        assert_eq!(bincode::deserialize::<Operator>(&bytes).unwrap(), o);
    }
}
