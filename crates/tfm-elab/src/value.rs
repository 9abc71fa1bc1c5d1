//! Compile-time values (int, float, bool, choice) and their checked arithmetic.

use tfm_ir::ConstValue;
use tfm_syntax::ast::BinOp;

/// A compile-time value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    Int(i64),
    Float(f64),
    Bool(bool),
    Choice(String),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Int(_) => "int",
            Val::Float(_) => "float",
            Val::Bool(_) => "bool",
            Val::Choice(_) => "choice",
        }
    }
    pub fn to_const(&self) -> ConstValue {
        match self {
            Val::Int(i) => ConstValue::Int(*i),
            Val::Float(f) => ConstValue::Float(*f),
            Val::Bool(b) => ConstValue::Bool(*b),
            Val::Choice(c) => ConstValue::Choice(c.clone()),
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl std::fmt::Display for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_const())
    }
}

/// Why a constant operation failed: `(code, message, hint)`.
pub(crate) type OpError = (&'static str, String, Option<String>);

fn overflow(op: BinOp, a: impl std::fmt::Display, b: impl std::fmt::Display) -> OpError {
    (
        crate::codes::OVERFLOW,
        format!("integer overflow in `{a} {} {b}`", op.symbol()),
        Some("integers are 64-bit; use smaller values or a float".into()),
    )
}

/// Applies a binary operator to two constants.
pub(crate) fn binop(op: BinOp, a: &Val, b: &Val) -> Result<Val, OpError> {
    use BinOp::*;
    use Val::*;
    let mismatch = || -> OpError {
        (
            crate::codes::TYPE,
            format!("cannot apply `{}` to {} `{a}` and {} `{b}`", op.symbol(), a.type_name(), b.type_name()),
            None,
        )
    };
    Ok(match (op, a, b) {
        (And, Bool(x), Bool(y)) => Bool(*x && *y),
        (Or, Bool(x), Bool(y)) => Bool(*x || *y),
        (Eq, x, y) if x.type_name() == y.type_name() && !matches!(x, Float(_)) => Bool(x == y),
        (Ne, x, y) if x.type_name() == y.type_name() && !matches!(x, Float(_)) => Bool(x != y),
        (Eq | Ne | Lt | Le | Gt | Ge, Int(x), Int(y)) => Bool(match op {
            Eq => x == y,
            Ne => x != y,
            Lt => x < y,
            Le => x <= y,
            Gt => x > y,
            _ => x >= y,
        }),
        (Eq | Ne | Lt | Le | Gt | Ge, x, y) if x.as_f64().is_some() && y.as_f64().is_some() => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            Bool(match op {
                Eq => x == y,
                Ne => x != y,
                Lt => x < y,
                Le => x <= y,
                Gt => x > y,
                _ => x >= y,
            })
        }
        (Add, Int(x), Int(y)) => Int(x.checked_add(*y).ok_or_else(|| overflow(op, x, y))?),
        (Sub, Int(x), Int(y)) => Int(x.checked_sub(*y).ok_or_else(|| overflow(op, x, y))?),
        (Mul, Int(x), Int(y)) => Int(x.checked_mul(*y).ok_or_else(|| overflow(op, x, y))?),
        (Div | Rem, Int(_), Int(0)) => {
            return Err((crate::codes::DIV_ZERO, format!("division by zero in `{a} {} {b}`", op.symbol()), None))
        }
        (Div, Int(x), Int(y)) => {
            if x.checked_rem(*y) != Some(0) {
                return Err((
                    crate::codes::INEXACT,
                    format!("integer division `{x} / {y}` is not exact"),
                    Some(format!("write `floor_div({x}, {y})` or `ceil_div({x}, {y})`, or `float({x}) / {y}` for a float")),
                ));
            }
            Int(x.checked_div(*y).ok_or_else(|| overflow(op, x, y))?)
        }
        (Rem, Int(x), Int(y)) => Int(x.checked_rem_euclid(*y).ok_or_else(|| overflow(op, x, y))?),
        (Pow, Int(x), Int(y)) => {
            let e = u32::try_from(*y).map_err(|_| -> OpError {
                (crate::codes::TYPE, format!("negative exponent in `{x} ** {y}`"), Some("use floats: `float(x) ** y`".into()))
            })?;
            Int(x.checked_pow(e).ok_or_else(|| overflow(op, x, y))?)
        }
        (Add | Sub | Mul | Div | Pow, x, y) if x.as_f64().is_some() && y.as_f64().is_some() => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            let r = match op {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div => x / y,
                _ => x.powf(y),
            };
            if !r.is_finite() {
                return Err((crate::codes::OVERFLOW, format!("`{a} {} {b}` is not a finite number", op.symbol()), None));
            }
            Float(r)
        }
        _ => return Err(mismatch()),
    })
}

/// Parses a `--set` value: bool, int (underscores allowed), float, or a choice name.
pub(crate) fn parse_override(raw: &str) -> Option<Val> {
    let s = raw.trim();
    match s {
        "true" => return Some(Val::Bool(true)),
        "false" => return Some(Val::Bool(false)),
        _ => {}
    }
    let digits: String = s.chars().filter(|c| *c != '_').collect();
    if let Ok(i) = digits.parse::<i64>() {
        return Some(Val::Int(i));
    }
    if let Ok(f) = digits.parse::<f64>() {
        if f.is_finite() {
            return Some(Val::Float(f));
        }
    }
    let mut chars = s.chars();
    let ident = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ident.then(|| Val::Choice(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic() {
        assert_eq!(binop(BinOp::Mul, &Val::Int(1_000_000), &Val::Int(1_000_000_000)), Ok(Val::Int(1_000_000_000_000_000)));
        assert_eq!(binop(BinOp::Mul, &Val::Int(i64::MAX), &Val::Int(2)).map_err(|e| e.0), Err(crate::codes::OVERFLOW));
        assert_eq!(binop(BinOp::Div, &Val::Int(768), &Val::Int(12)), Ok(Val::Int(64)));
        let e = binop(BinOp::Div, &Val::Int(7), &Val::Int(2)).err().map(|e| e.2);
        assert_eq!(e, Some(Some("write `floor_div(7, 2)` or `ceil_div(7, 2)`, or `float(7) / 2` for a float".to_string())));
        assert_eq!(binop(BinOp::Rem, &Val::Int(7), &Val::Int(0)).map_err(|e| e.0), Err(crate::codes::DIV_ZERO));
        assert_eq!(binop(BinOp::Pow, &Val::Int(10), &Val::Int(15)), Ok(Val::Int(1_000_000_000_000_000)));
        assert_eq!(binop(BinOp::Pow, &Val::Int(10), &Val::Int(19)).map_err(|e| e.0), Err(crate::codes::OVERFLOW));
        assert_eq!(binop(BinOp::Div, &Val::Float(1.0), &Val::Int(4)), Ok(Val::Float(0.25)));
        assert_eq!(binop(BinOp::Le, &Val::Int(3), &Val::Float(3.5)), Ok(Val::Bool(true)));
        assert_eq!(binop(BinOp::Eq, &Val::Choice("gelu".into()), &Val::Choice("gelu".into())), Ok(Val::Bool(true)));
        assert_eq!(binop(BinOp::Add, &Val::Bool(true), &Val::Int(1)).map_err(|e| e.0), Err(crate::codes::TYPE));
    }

    #[test]
    fn overrides_parse() {
        assert_eq!(parse_override("24"), Some(Val::Int(24)));
        assert_eq!(parse_override("50_257"), Some(Val::Int(50257)));
        assert_eq!(parse_override("0.1"), Some(Val::Float(0.1)));
        assert_eq!(parse_override("1e-5"), Some(Val::Float(1e-5)));
        assert_eq!(parse_override("false"), Some(Val::Bool(false)));
        assert_eq!(parse_override("swiglu"), Some(Val::Choice("swiglu".into())));
        assert_eq!(parse_override("a b"), None);
    }
}
