//! Renders diagnostics for people (codespan-reporting) and for machines (JSON, GitHub annotations).
