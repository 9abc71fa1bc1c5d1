//! A serialisable character- or word-level vocabulary with fixed special tokens, plus the word
//! pre-tokenizer (punctuation split off, French elision kept on the left piece) and its inverse.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Padding; also the id decoders stop at.
pub const PAD: u32 = 0;
/// Any unit not in the vocabulary.
pub const UNK: u32 = 1;
/// Beginning of sequence; doubles as `[CLS]`.
pub const BOS: u32 = 2;
/// End of sequence; doubles as `[SEP]`.
pub const EOS: u32 = 3;
/// Masked-language-model mask.
pub const MASK: u32 = 4;
/// The special tokens, in id order: ids `0..SPECIALS.len()`.
pub const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"];

/// What one vocabulary entry is: a character or a word from [`words`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Char,
    Word,
    /// UTF-8 bytes, written `<0xNN>`: a fixed vocabulary that covers any text (see
    /// [`Vocab::bytes`]).
    Byte,
}

/// Tokens by id; ids `0..5` are [`SPECIALS`]. Treat `tokens` as read-only once the vocabulary
/// has been used for lookups (the lookup index is built on first use).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Vocab {
    pub level: Level,
    pub lowercase: bool,
    pub tokens: Vec<String>,
    #[serde(skip)]
    index: OnceLock<(usize, HashMap<String, u32>)>,
}

impl PartialEq for Vocab {
    fn eq(&self, other: &Self) -> bool {
        self.level == other.level && self.lowercase == other.lowercase && self.tokens == other.tokens
    }
}

impl Eq for Vocab {}

impl Vocab {
    /// A vocabulary from its token list; the first five tokens should be [`SPECIALS`]
    /// (see [`Vocab::has_specials`]).
    pub fn new(level: Level, lowercase: bool, tokens: Vec<String>) -> Vocab {
        Vocab {
            level,
            lowercase,
            tokens,
            index: OnceLock::new(),
        }
    }

    /// Counts the units of `texts` and keeps those seen at least `min_count` times, most frequent
    /// first (ties in lexicographic order), after the specials. `max_size` bounds the total size,
    /// specials included (the specials are always kept).
    pub fn build<'a>(
        texts: impl Iterator<Item = &'a str>,
        level: Level,
        lowercase: bool,
        min_count: usize,
        max_size: Option<usize>,
    ) -> Vocab {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for text in texts {
            for unit in units(text, level, lowercase) {
                *counts.entry(unit).or_insert(0) += 1;
            }
        }
        let mut entries: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(t, c)| *c >= min_count.max(1) && !SPECIALS.contains(&t.as_str()))
            .collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        let room = match max_size {
            Some(m) => m.saturating_sub(SPECIALS.len()),
            None => usize::MAX,
        };
        tokens.extend(entries.into_iter().take(room).map(|(t, _)| t));
        Vocab::new(level, lowercase, tokens)
    }

    /// The fixed byte vocabulary: the specials, then byte `b` as id `5 + b` (261 tokens),
    /// case kept.
    pub fn bytes() -> Vocab {
        let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        tokens.extend((0..=255u8).map(byte_token));
        Vocab::new(Level::Byte, false, tokens)
    }

    /// Number of tokens, specials included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether ids `0..5` hold [`SPECIALS`] (true for every vocabulary made by [`Vocab::build`]).
    pub fn has_specials(&self) -> bool {
        self.tokens.len() >= SPECIALS.len() && self.tokens.iter().zip(SPECIALS).all(|(t, s)| t == s)
    }

    /// The lookup index and the token count it was built from.
    fn index(&self) -> &(usize, HashMap<String, u32>) {
        self.index.get_or_init(|| {
            let mut m = HashMap::with_capacity(self.tokens.len());
            for (i, t) in self.tokens.iter().enumerate() {
                m.entry(t.clone()).or_insert(i as u32);
            }
            (self.tokens.len(), m)
        })
    }

    /// The id of a token, exactly as stored (no lowercasing).
    pub fn id(&self, token: &str) -> Option<u32> {
        let (built_from, index) = self.index();
        if *built_from != self.tokens.len() {
            // The token list grew or shrank after the index was built: scan instead.
            return self.tokens.iter().position(|t| t == token).map(|i| i as u32);
        }
        match index.get(token) {
            Some(&i) if self.tokens.get(i as usize).map(String::as_str) == Some(token) => Some(i),
            Some(_) => self.tokens.iter().position(|t| t == token).map(|i| i as u32),
            None => None,
        }
    }

    /// Ids of the units of `text` ([`UNK`] for units not in the vocabulary); no BOS/EOS added.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        units(text, self.level, self.lowercase)
            .iter()
            .map(|u| self.id(u).unwrap_or(UNK))
            .collect()
    }

    /// Text for `ids`, skipping the specials and ids outside the vocabulary; word-level output is
    /// joined by [`detokenize`].
    pub fn decode(&self, ids: &[u32]) -> String {
        let pieces: Vec<String> = ids
            .iter()
            .filter(|&&i| (i as usize) >= SPECIALS.len())
            .filter_map(|&i| self.tokens.get(i as usize).cloned())
            .collect();
        match self.level {
            Level::Char => pieces.concat(),
            Level::Word => detokenize(&pieces),
            Level::Byte => {
                let bytes: Vec<u8> = pieces
                    .iter()
                    .filter_map(|p| p.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')))
                    .filter_map(|h| u8::from_str_radix(h, 16).ok())
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }
}

/// The units a vocabulary of `level` counts in `text`: characters (each lowercased when asked;
/// whitespace kept) or [`words`].
pub fn units(text: &str, level: Level, lowercase: bool) -> Vec<String> {
    match level {
        Level::Word => words(text, lowercase),
        Level::Char if lowercase => text
            .chars()
            .flat_map(char::to_lowercase)
            .map(String::from)
            .collect(),
        Level::Char => text.chars().map(String::from).collect(),
        Level::Byte if lowercase => text.to_lowercase().bytes().map(byte_token).collect(),
        Level::Byte => text.bytes().map(byte_token).collect(),
    }
}

/// The token of one byte in a [`Level::Byte`] vocabulary.
pub fn byte_token(b: u8) -> String {
    format!("<0x{b:02X}>")
}

/// Combining diacritics (U+0300..U+036F) continue a word written in decomposed form.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || ('\u{0300}'..='\u{036F}').contains(&c)
}

/// Typographic apostrophes are read as `'`.
fn normalize(c: char) -> char {
    match c {
        '\u{2019}' | '\u{2018}' | '\u{02BC}' => '\'',
        other => other,
    }
}

/// Word-level pre-tokenization. Runs of letters and digits are words; every other visible
/// character is a token of its own (`Hello, world!` -> `hello , world !`), hyphens included
/// (`celui-ci` -> `celui - ci`). An apostrophe between a letter or digit and a following letter
/// ends the word on its left (`l'homme` -> `l'` `homme`, `don't` -> `don'` `t`); typographic
/// apostrophes count as `'`. A `.` or `,` between digits stays inside a number (`3.5`, `1,000`).
/// Unicode whitespace (including U+00A0 and U+202F) separates tokens.
pub fn words(text: &str, lowercase: bool) -> Vec<String> {
    let chars: Vec<char> = text.chars().map(normalize).collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            let w = std::mem::take(cur);
            out.push(if lowercase { w.to_lowercase() } else { w });
        }
    };
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            flush(&mut cur, &mut out);
        } else if is_word_char(c) {
            cur.push(c);
        } else if c == '\'' && !cur.is_empty() && next.is_some_and(char::is_alphabetic) {
            cur.push(c);
            flush(&mut cur, &mut out);
        } else if (c == '.' || c == ',')
            && cur.chars().last().is_some_and(|p| p.is_ascii_digit())
            && next.is_some_and(|n| n.is_ascii_digit())
        {
            cur.push(c);
        } else {
            flush(&mut cur, &mut out);
            out.push(c.to_string());
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// Tokens that attach to the word before them.
fn closes(t: &str) -> bool {
    matches!(t, "," | "." | "!" | "?" | ";" | ":" | ")" | "]" | "}" | "%" | "»" | "…" | "-")
}

/// Tokens that attach to the word after them.
fn opens(t: &str) -> bool {
    matches!(t, "(" | "[" | "{" | "«" | "¿" | "¡" | "-") || (t.len() > 1 && t.ends_with('\''))
}

/// Joins [`words`] output for display: no space before closing punctuation, none after an
/// opening bracket or an elided word (`l'`), none around hyphens.
/// `["hello", ",", "world", "!"]` -> `hello, world!`; `["l'", "homme"]` -> `l'homme`.
pub fn detokenize(words: &[String]) -> String {
    let mut out = String::new();
    let mut prev: Option<&str> = None;
    for w in words {
        if let Some(p) = prev {
            if !closes(w) && !opens(p) {
                out.push(' ');
            }
        }
        out.push_str(w);
        prev = Some(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> Vec<String> {
        words(text, true)
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn punctuation_is_split_off() {
        assert_eq!(w("Hello, world!"), s(&["hello", ",", "world", "!"]));
        assert_eq!(words("Hello, world!", false), s(&["Hello", ",", "world", "!"]));
        assert_eq!(w("Wait..."), s(&["wait", ".", ".", "."]));
    }

    #[test]
    fn elision_stays_on_the_left() {
        assert_eq!(w("l'homme"), s(&["l'", "homme"]));
        assert_eq!(w("J'ai faim."), s(&["j'", "ai", "faim", "."]));
        assert_eq!(w("Je l’ai vu."), s(&["je", "l'", "ai", "vu", "."]));
        assert_eq!(w("Aujourd'hui"), s(&["aujourd'", "hui"]));
        assert_eq!(w("I'm here"), s(&["i'", "m", "here"]));
        // Not between a word and a letter: a token of its own.
        assert_eq!(w("'quoted'"), s(&["'", "quoted", "'"]));
    }

    #[test]
    fn unicode_letters_and_narrow_spaces() {
        assert_eq!(w("Ça alors\u{202F}!"), s(&["ça", "alors", "!"]));
        assert_eq!(w("Cœur\u{00A0}?"), s(&["cœur", "?"]));
        assert_eq!(w("Arrête-toi !"), s(&["arrête", "-", "toi", "!"]));
        assert_eq!(w("ÉTÉ"), s(&["été"]));
    }

    #[test]
    fn numbers_keep_inner_separators() {
        assert_eq!(w("It costs 3.50, ok."), s(&["it", "costs", "3.50", ",", "ok", "."]));
        assert_eq!(w("1,000 men"), s(&["1,000", "men"]));
    }

    #[test]
    fn detokenize_inverts_common_cases() {
        for text in [
            "hello, world!",
            "l'homme est là.",
            "arrête-toi!",
            "it costs 3.50, ok?",
            "(see this)",
        ] {
            assert_eq!(detokenize(&w(text)), text);
        }
    }

    #[test]
    fn build_orders_by_count_then_text() {
        let v = Vocab::build(["b a b", "c a b"].into_iter(), Level::Word, true, 1, None);
        assert_eq!(v.tokens[5..], s(&["b", "a", "c"]));
        assert!(v.has_specials());
        let v2 = Vocab::build(["b a b", "c a b"].into_iter(), Level::Word, true, 2, None);
        assert_eq!(v2.tokens[5..], s(&["b", "a"]));
        let v3 = Vocab::build(["b a b", "c a b"].into_iter(), Level::Word, true, 1, Some(6));
        assert_eq!(v3.len(), 6);
        assert_eq!(v3.tokens[5], "b");
    }

    #[test]
    fn encode_decode_round_trip_and_unknowns() {
        let v = Vocab::build(["Hello, world!"].into_iter(), Level::Word, true, 1, None);
        let ids = v.encode("hello world, zebra!");
        assert_eq!(ids.len(), 5);
        assert_eq!(ids[3], UNK);
        assert_eq!(v.id("hello"), Some(ids[0]));
        assert_eq!(v.id("zebra"), None);
        let mut with_specials = vec![BOS];
        with_specials.extend(&ids);
        with_specials.push(EOS);
        with_specials.push(PAD);
        assert_eq!(v.decode(&with_specials), "hello world,!");
    }

    #[test]
    fn char_level_counts_characters() {
        let v = Vocab::build(["aAb"].into_iter(), Level::Char, true, 1, None);
        assert_eq!(v.tokens[5..], s(&["a", "b"]));
        assert_eq!(v.encode("Ab?"), vec![5, 6, UNK]);
        assert_eq!(v.decode(&[5, 6, MASK, 5]), "aba");
    }

    #[test]
    fn serde_round_trip_keeps_lookups() {
        let v = Vocab::build(["un deux deux"].into_iter(), Level::Word, false, 1, None);
        let _ = v.encode("deux");
        let json = serde_json::to_string(&v).expect("serialize");
        assert!(json.contains("\"level\":\"word\""), "{json}");
        let back: Vocab = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, v);
        assert_eq!(back.encode("deux un trois"), vec![5, 6, UNK]);
    }
}
