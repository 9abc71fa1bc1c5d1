//! Symbolic dimensions: integer polynomials over shape variables, normalised so that equal
//! dims compare equal (`T * 2` == `2 * T`), with floor-division terms for what is not polynomial.

use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// An atom of a monomial: a shape variable, or `floor(inner / divisor)` of a dim that did not divide.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Atom {
    Var(String),
    FloorDiv(Box<Dim>, u64),
}

/// A dimension: `sum(coeff * product(atoms))`. The empty monomial is the constant term.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dim {
    terms: BTreeMap<Vec<Atom>, i64>,
}

/// Values of shape variables, bound from actual tensors at run time or from `given` clauses.
pub type DimEnv = HashMap<String, u64>;

impl Dim {
    pub fn known(n: u64) -> Dim {
        Dim::constant(n as i64)
    }
    pub fn constant(n: i64) -> Dim {
        let mut terms = BTreeMap::new();
        if n != 0 {
            terms.insert(vec![], n);
        }
        Dim { terms }
    }
    pub fn var(name: &str) -> Dim {
        Dim { terms: BTreeMap::from([(vec![Atom::Var(name.to_string())], 1)]) }
    }
    /// The value if no shape variable occurs.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&vec![]).copied(),
            _ => None,
        }
    }
    pub fn as_known(&self) -> Option<u64> {
        self.as_const().and_then(|c| u64::try_from(c).ok())
    }
    pub fn is_symbolic(&self) -> bool {
        self.as_const().is_none()
    }
    /// The shape variables occurring in this dim.
    pub fn vars(&self) -> Vec<String> {
        let mut out = vec![];
        for m in self.terms.keys() {
            for a in m {
                match a {
                    Atom::Var(v) => out.push(v.clone()),
                    Atom::FloorDiv(d, _) => out.extend(d.vars()),
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
    /// If this dim is exactly one variable, its name.
    pub fn as_var(&self) -> Option<&str> {
        match self.terms.iter().next() {
            Some((m, 1)) if self.terms.len() == 1 && m.len() == 1 => match &m[0] {
                Atom::Var(v) => Some(v),
                _ => None,
            },
            _ => None,
        }
    }
    pub fn add(&self, o: &Dim) -> Dim {
        let mut terms = self.terms.clone();
        for (m, c) in &o.terms {
            let e = terms.entry(m.clone()).or_insert(0);
            *e = e.saturating_add(*c);
            if *e == 0 {
                terms.remove(m);
            }
        }
        Dim { terms }
    }
    pub fn neg(&self) -> Dim {
        Dim { terms: self.terms.iter().map(|(m, c)| (m.clone(), c.saturating_neg())).collect() }
    }
    pub fn sub(&self, o: &Dim) -> Dim {
        self.add(&o.neg())
    }
    pub fn mul(&self, o: &Dim) -> Dim {
        let mut out = Dim::default();
        for (m1, c1) in &self.terms {
            for (m2, c2) in &o.terms {
                let mut m: Vec<Atom> = m1.iter().chain(m2).cloned().collect();
                m.sort();
                out = out.add(&Dim { terms: BTreeMap::from([(m, c1.saturating_mul(*c2))]) });
            }
        }
        out
    }
    /// Exact division by a positive constant, if every coefficient divides.
    pub fn div_exact(&self, d: u64) -> Option<Dim> {
        let d = i64::try_from(d).ok().filter(|d| *d > 0)?;
        if self.terms.values().all(|c| c % d == 0) {
            Some(Dim { terms: self.terms.iter().map(|(m, c)| (m.clone(), c / d)).collect() })
        } else {
            None
        }
    }
    /// Floor division by a positive constant: exact when possible, else a `FloorDiv` atom.
    pub fn floor_div(&self, d: u64) -> Dim {
        if d == 0 {
            return self.clone();
        }
        if let Some(c) = self.as_const() {
            return Dim::constant(c.div_euclid(d as i64));
        }
        if let Some(q) = self.div_exact(d) {
            return q;
        }
        Dim { terms: BTreeMap::from([(vec![Atom::FloorDiv(Box::new(self.clone()), d)], 1)]) }
    }
    /// Evaluates with the given shape variables; `None` if one is unbound or the result is negative.
    pub fn eval(&self, env: &DimEnv) -> Option<u64> {
        let mut total: i128 = 0;
        for (m, c) in &self.terms {
            let mut p: i128 = *c as i128;
            for a in m {
                let v = match a {
                    Atom::Var(v) => *env.get(v)? as i128,
                    Atom::FloorDiv(d, k) => (d.eval(env)? / k) as i128,
                };
                p = p.checked_mul(v)?;
            }
            total = total.checked_add(p)?;
        }
        u64::try_from(total).ok()
    }
    /// Replaces shape variables by dims (used when a block's port types are matched at a call).
    pub fn subst(&self, env: &HashMap<String, Dim>) -> Dim {
        let mut out = Dim::default();
        for (m, c) in &self.terms {
            let mut p = Dim::constant(*c);
            for a in m {
                let f = match a {
                    Atom::Var(v) => env.get(v).cloned().unwrap_or_else(|| Dim::var(v)),
                    Atom::FloorDiv(d, k) => d.subst(env).floor_div(*k),
                };
                p = p.mul(&f);
            }
            out = out.add(&p);
        }
        out
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Var(v) => write!(f, "{v}"),
            Atom::FloorDiv(d, k) => {
                if d.terms.len() > 1 { write!(f, "({d})/{k}") } else { write!(f, "{d}/{k}") }
            }
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return write!(f, "0");
        }
        // Symbolic terms first (highest degree first), constant last: `T + 1`, `2*T`.
        let mut terms: Vec<_> = self.terms.iter().collect();
        terms.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        for (i, (m, c)) in terms.iter().enumerate() {
            let c = **c;
            let (sign, abs) = if c < 0 { ("-", c.unsigned_abs()) } else { ("+", c as u64) };
            if i == 0 {
                if c < 0 {
                    write!(f, "-")?;
                }
            } else {
                write!(f, " {sign} ")?;
            }
            if m.is_empty() {
                write!(f, "{abs}")?;
            } else {
                if abs != 1 {
                    write!(f, "{abs}*")?;
                }
                for (j, a) in m.iter().enumerate() {
                    if j > 0 {
                        write!(f, "*")?;
                    }
                    write!(f, "{a}")?;
                }
            }
        }
        Ok(())
    }
}

impl Serialize for Dim {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_const() {
            Some(c) => s.serialize_i64(c),
            None => s.serialize_str(&self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_evaluates() {
        let t = Dim::var("T");
        let a = t.mul(&Dim::known(2)).add(&Dim::known(1));
        let b = Dim::known(1).add(&Dim::known(2).mul(&t));
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2*T + 1");
        let env = DimEnv::from([("T".to_string(), 5)]);
        assert_eq!(a.eval(&env), Some(11));
        let conv = a.sub(&Dim::known(3)).floor_div(2).add(&Dim::known(1));
        assert_eq!(conv.eval(&env), Some(5));
        assert_eq!(t.mul(&Dim::known(4)).floor_div(2), t.mul(&Dim::known(2)));
        assert_eq!(Dim::var("B").eval(&env), None);
    }
}
