//! Python semantics over JSON values, so the sample applications answer byte for byte as their
//! Python originals: arithmetic (`int * int` stays an int, `3 * "2"` is `"222"`, `True` is 1),
//! `str()`, float `repr`, tuple unpacking and the JSON encoding of results.

use serde_json::{Map, Number, Value};

/// A Python exception, by its message (it becomes a 500 at the front door).
pub type PyResult<T> = Result<T, String>;

enum Num {
    Int(i64),
    Float(f64),
}

fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Bool(b) => Some(Num::Int(*b as i64)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(Num::Int(i)),
            None if n.is_u64() => None,
            None => n.as_f64().map(Num::Float),
        },
        _ => None,
    }
}

fn int_value(i: i128) -> PyResult<Value> {
    i64::try_from(i).map(Value::from).map_err(|_| "OverflowError: integer result beyond 64 bits".to_string())
}

fn float_value(f: f64) -> Value {
    // Not representable in JSON; encoding the result reports it, as Starlette's allow_nan=False does.
    Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn repeat(seq: &Value, times: i64) -> PyResult<Value> {
    let n = times.max(0) as usize;
    match seq {
        Value::String(s) => {
            if s.len().saturating_mul(n) > 64 << 20 {
                return Err("MemoryError".into());
            }
            Ok(Value::String(s.repeat(n)))
        }
        Value::Array(items) => {
            if items.len().saturating_mul(n) > 1 << 20 {
                return Err("MemoryError".into());
            }
            Ok(Value::Array(items.iter().cloned().cycle().take(items.len() * n).collect()))
        }
        _ => unreachable!("callers pass sequences only"),
    }
}

/// `a * b`.
pub fn mul(a: &Value, b: &Value) -> PyResult<Value> {
    match (num(a), num(b)) {
        (Some(Num::Int(x)), Some(Num::Int(y))) => int_value(x as i128 * y as i128),
        (Some(x), Some(y)) => Ok(float_value(as_f64(x) * as_f64(y))),
        (Some(Num::Int(n)), None) if a.is_number() || a.is_boolean() => match b {
            Value::String(_) | Value::Array(_) => repeat(b, n),
            _ => Err(unsupported("*", a, b)),
        },
        (None, Some(Num::Int(n))) => match a {
            Value::String(_) | Value::Array(_) => repeat(a, n),
            _ => Err(unsupported("*", a, b)),
        },
        _ => Err(unsupported("*", a, b)),
    }
}

/// `a + b`.
pub fn add(a: &Value, b: &Value) -> PyResult<Value> {
    match (num(a), num(b)) {
        (Some(Num::Int(x)), Some(Num::Int(y))) => int_value(x as i128 + y as i128),
        (Some(x), Some(y)) => Ok(float_value(as_f64(x) + as_f64(y))),
        _ => match (a, b) {
            (Value::String(x), Value::String(y)) => Ok(Value::String(format!("{x}{y}"))),
            (Value::Array(x), Value::Array(y)) => Ok(Value::Array(x.iter().chain(y).cloned().collect())),
            _ => Err(unsupported("+", a, b)),
        },
    }
}

fn as_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    }
}

fn unsupported(op: &str, a: &Value, b: &Value) -> String {
    format!("TypeError: unsupported operand type(s) for {op}: '{}' and '{}'", type_name(a), type_name(b))
}

/// `x, y = value`: a list of two, a dict of two keys (its keys), or a two-character string.
pub fn unpack2(v: &Value) -> PyResult<(Value, Value)> {
    let items: Vec<Value> = match v {
        Value::Array(items) => items.clone(),
        Value::Object(m) => m.keys().map(|k| Value::String(k.clone())).collect(),
        Value::String(s) => s.chars().map(|c| Value::String(c.to_string())).collect(),
        other => return Err(format!("TypeError: cannot unpack non-iterable {} object", type_name(other))),
    };
    match <[Value; 2]>::try_from(items) {
        Ok([x, y]) => Ok((x, y)),
        Err(items) if items.len() < 2 => {
            Err(format!("ValueError: not enough values to unpack (expected 2, got {})", items.len()))
        }
        Err(_) => Err("ValueError: too many values to unpack (expected 2)".into()),
    }
}

/// Whether the value can be a dict key (`x in some_dict` raises otherwise).
pub fn hashable(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// Python's `repr(float)`: the shortest round-trip digits, fixed notation for exponents in
/// -4..16, otherwise `1e+16` style.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        format!("{sign}{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

fn number_repr(n: &Number) -> String {
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => i.to_string(),
        (None, Some(u)) => u.to_string(),
        _ => float_repr(n.as_f64().unwrap_or(f64::NAN)),
    }
}

fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr(value)`.
pub fn repr(v: &Value) -> String {
    match v {
        Value::String(s) => str_repr(s),
        other => str(other),
    }
}

/// Python's `str(value)` (what an f-string prints).
pub fn str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => number_repr(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter().map(|(k, v)| format!("{}: {}", str_repr(k), repr(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))`, as
/// Starlette's JSONResponse encodes a handler's result.
pub fn json_dumps(v: &Value) -> PyResult<String> {
    let mut out = String::new();
    write_json(v, &mut out)?;
    Ok(out)
}

fn write_json(v: &Value, out: &mut String) -> PyResult<()> {
    match v {
        Value::Number(n) => {
            if n.as_f64().is_some_and(|f| !f.is_finite()) {
                return Err("ValueError: Out of range float values are not JSON compliant".into());
            }
            out.push_str(&number_repr(n));
        }
        Value::String(s) => out.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out)?;
            }
            out.push(']');
        }
        Value::Object(m) => write_object(m, out)?,
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
    }
    Ok(())
}

fn write_object(m: &Map<String, Value>, out: &mut String) -> PyResult<()> {
    out.push('{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).map_err(|e| e.to_string())?);
        out.push(':');
        write_json(v, out)?;
    }
    out.push('}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn float_repr_matches_python() {
        for (x, s) in [
            (6.0, "6.0"),
            (4.5, "4.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5, "-2.5"),
            (12.5, "12.5"),
            (1.2345e20, "1.2345e+20"),
            (-0.0, "-0.0"),
        ] {
            assert_eq!(float_repr(x), s, "{x}");
        }
    }

    #[test]
    fn arithmetic_follows_python() {
        assert_eq!(mul(&json!(3), &json!(2)).unwrap(), json!(6));
        assert_eq!(str(&mul(&json!(3), &json!(2.0)).unwrap()), "6.0");
        assert_eq!(mul(&json!(3), &json!("2")).unwrap(), json!("222"));
        assert_eq!(mul(&json!(true), &json!(5)).unwrap(), json!(5));
        assert_eq!(mul(&json!(2), &json!([1])).unwrap(), json!([1, 1]));
        assert!(mul(&json!(3), &json!(null)).is_err());
        assert!(mul(&json!(1.5), &json!("x")).is_err());
        assert_eq!(add(&json!(3), &json!(3)).unwrap(), json!(6));
        assert!(add(&json!("x"), &json!(3)).is_err());
    }

    #[test]
    fn unpacking_follows_python() {
        assert_eq!(unpack2(&json!(["MANGO", 2])).unwrap(), (json!("MANGO"), json!(2)));
        assert_eq!(unpack2(&json!({"a": 1, "b": 2})).unwrap(), (json!("a"), json!("b")));
        assert_eq!(unpack2(&json!("ab")).unwrap(), (json!("a"), json!("b")));
        assert!(unpack2(&json!([])).is_err());
        assert!(unpack2(&json!({"fruit": "MANGO"})).is_err());
        assert!(unpack2(&json!(5)).is_err());
    }

    #[test]
    fn str_and_json_follow_python() {
        assert_eq!(str(&json!([1, "a", 2.0])), "[1, 'a', 2.0]");
        assert_eq!(str(&json!(null)), "None");
        assert_eq!(json_dumps(&json!([1, 2.0, {"k": "é"}])).unwrap(), "[1,2.0,{\"k\":\"é\"}]");
        assert_eq!(json_dumps(&json!(-1)).unwrap(), "-1");
    }
}
