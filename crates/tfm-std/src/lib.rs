//! The standard library, written in .tfm and embedded in the binary.
//!
//! `import std` brings every file below into one namespace, `std`.

/// `(name shown in diagnostics, source text)` for each file of the standard library.
pub const FILES: &[(&str, &str)] = &[("<std>/nn.tfm", include_str!("../std/nn.tfm"))];
