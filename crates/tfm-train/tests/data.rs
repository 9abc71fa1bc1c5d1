//! Tokenizers, splits, nanoGPT-style windows, token files and every data error.

use std::path::PathBuf;

use tfm_train::config::{DataConfig, TokenizerKind};
use tfm_train::data::{read_token_file, write_token_file, DataSource, Split, TextData, Tokenizer};
use tfm_train::{Rng, TrainError};

fn data_dir() -> PathBuf {
    match std::env::var_os("TFM_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    }
}

fn cfg(path: PathBuf) -> DataConfig {
    let c = tfm_train::RunConfig::new("m.tfm", path);
    c.data
}

#[test]
fn char_vocab_is_the_sorted_distinct_characters() {
    let t = Tokenizer::char_from_corpus("hello world");
    assert_eq!(
        t,
        Tokenizer::Char {
            chars: " dehlorw".into()
        }
    );
    assert_eq!(t.vocab_size(), 8);
    let ids = t.encode("hello").expect("encode");
    assert_eq!(ids, vec![3, 2, 4, 4, 5]); // " dehlorw": h = 3, e = 2, l = 4, o = 5
    assert_eq!(t.decode(&ids), "hello");
    let e = t.encode("help").expect_err("p is unknown");
    assert_eq!(
        e.to_string(),
        "character 'p' at position 3 is not in the vocabulary"
    );
}

#[test]
fn byte_tokenizer_round_trips_utf8() {
    let t = Tokenizer::Byte;
    let ids = t.encode("né").expect("encode");
    assert_eq!(ids, vec![110, 195, 169]);
    assert_eq!(t.decode(&ids), "né");
    assert_eq!(t.vocab_size(), 256);
}

#[test]
fn tokenizer_json_round_trip_and_mismatch() {
    let t = Tokenizer::char_from_corpus("abc\n");
    let back = Tokenizer::from_json(&t.to_json()).expect("json");
    assert_eq!(back, t);
    assert_eq!(t.to_json(), r#"{"kind":"char","chars":"\nabc"}"#);
    let e = t
        .check_same(&Tokenizer::char_from_corpus("abd\n"))
        .expect_err("different vocab");
    assert_eq!(e.to_string(), "vocabulary mismatch: expected a character vocabulary of 4 symbols, found a character vocabulary of 4 symbols");
    let e = Tokenizer::Byte
        .check_model_vocab(65)
        .expect_err("too small");
    assert_eq!(
        e.to_string(),
        "vocabulary mismatch: expected at most 65 tokens (the model's vocabulary), found 256 (the byte vocabulary (256))"
    );
    assert!(t.check_model_vocab(4).is_ok());
}

#[test]
fn tinyshakespeare_matches_nanogpt() {
    let path = data_dir().join("tinyshakespeare.txt");
    let d = TextData::load(&cfg(path.clone()), TokenizerKind::Char)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // nanoGPT's prepare.py: 65 characters, 1,003,854 training and 111,540 validation tokens.
    assert_eq!(d.tokenizer.vocab_size(), 65);
    assert_eq!(d.train.len(), 1_003_854);
    assert_eq!(d.val.len(), 111_540);
    assert_eq!(d.tokenizer.decode(&d.train[..14]), "First Citizen:");
}

#[test]
fn split_is_first_ninety_last_ten_percent() {
    let d = TextData::from_text("abcdefghij", TokenizerKind::Char, 0.1).expect("data");
    assert_eq!(d.train, vec![0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(d.val, vec![9]);
    let d = TextData::from_text("abcdefghij", TokenizerKind::Char, 0.3).expect("data");
    assert_eq!(d.train.len(), 7);
}

#[test]
fn windows_are_shifted_slices_of_the_split() {
    let text: String = (0..200)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let d = TextData::from_text(&text, TokenizerKind::Byte, 0.1).expect("data");
    let mut rng = Rng::new(5);
    let b = d.sample(Split::Train, 4, 8, &mut rng).expect("batch");
    assert_eq!((b.batch, b.context, b.x.len(), b.y.len()), (4, 8, 32, 32));
    let train: Vec<i64> = d.train.iter().map(|&t| t as i64).collect();
    for r in 0..4 {
        let x = &b.x[r * 8..r * 8 + 8];
        let y = &b.y[r * 8..r * 8 + 8];
        let i = (0..train.len() - 8).find(|&i| &train[i..i + 8] == x && &train[i + 1..i + 9] == y);
        assert!(i.is_some(), "row {r} is not a window of the training split");
    }
    // Seeded: the same seed gives the same batch, another seed another.
    let again = d
        .sample(Split::Train, 4, 8, &mut Rng::new(5))
        .expect("batch");
    assert_eq!(again, b);
    assert_ne!(
        d.sample(Split::Train, 4, 8, &mut Rng::new(6))
            .expect("batch"),
        b
    );
}

#[test]
fn windows_reach_the_last_token() {
    // n = 10, T = 9: the only window is i = 0 and y ends with the last token.
    let d = TextData::from_tokens(Tokenizer::Tokens { vocab_size: 10 }, (0..10).collect(), 0.0)
        .expect("data");
    let b = d
        .sample(Split::Train, 3, 9, &mut Rng::new(1))
        .expect("batch");
    assert_eq!(&b.y[..9], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn missing_file_names_the_path() {
    let e = TextData::load(&cfg("no/such/corpus.txt".into()), TokenizerKind::Char)
        .expect_err("missing");
    let msg = e.to_string();
    assert!(
        msg.starts_with("cannot read `no/such/corpus.txt`: "),
        "{msg}"
    );
    assert!(matches!(e, TrainError::Io { .. }));
}

#[test]
fn empty_corpus_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("empty.txt");
    std::fs::write(&p, "").expect("write");
    let e = TextData::load(&cfg(p.clone()), TokenizerKind::Char).expect_err("empty");
    assert_eq!(
        e.to_string(),
        format!("{}: the corpus is empty", p.display())
    );
    let e = TextData::load(&cfg(p), TokenizerKind::Byte).expect_err("empty");
    assert!(e.to_string().ends_with("the corpus is empty"));
}

#[test]
fn non_utf8_text_suggests_the_byte_tokenizer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bin.txt");
    std::fs::write(&p, [b'a', b'b', 0xff, b'c']).expect("write");
    let e = TextData::load(&cfg(p.clone()), TokenizerKind::Char).expect_err("not utf-8");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: expected UTF-8 text, found an invalid byte at offset 2",
            p.display()
        )
    );
    assert_eq!(
        e.hint().as_deref(),
        Some("use `tokenizer: byte` for binary or non-UTF-8 files")
    );
    let d = TextData::load(&cfg(p), TokenizerKind::Byte).expect("bytes are fine");
    assert_eq!(d.train.len() + d.val.len(), 4);
}

#[test]
fn context_longer_than_the_data() {
    let d = TextData::from_text("abcdefghijklmnopqrst", TokenizerKind::Char, 0.25).expect("data");
    let e = d.check_context(15, false).expect_err("train too short");
    assert_eq!(
        e.to_string(),
        "context of 15 tokens is longer than the train split (15 tokens); a window needs 16 tokens"
    );
    assert!(d.check_context(14, false).is_ok());
    let e = d.check_context(5, true).expect_err("val too short");
    assert_eq!(e.to_string(), "context of 5 tokens is longer than the validation split (5 tokens); a window needs 6 tokens");
    assert!(d.sample(Split::Val, 1, 5, &mut Rng::new(0)).is_err());
}

#[test]
fn token_files_round_trip_in_both_widths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("a.tok");
    write_token_file(&p, &[0, 5, 65535, 7], 65536).expect("write u16");
    let bytes = std::fs::read(&p).expect("read");
    assert_eq!(&bytes[..8], b"TFMTOKS\0");
    assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
    assert_eq!(bytes.len(), 24 + 4 * 2);
    assert_eq!(
        read_token_file(&p).expect("read"),
        (vec![0, 5, 65535, 7], 65536)
    );
    write_token_file(&p, &[70000, 1], 100_000).expect("write u32");
    assert_eq!(std::fs::read(&p).expect("read").len(), 24 + 2 * 4);
    assert_eq!(
        read_token_file(&p).expect("read"),
        (vec![70000, 1], 100_000)
    );
    // `.tok` selects the token reader by default.
    let c = tfm_train::RunConfig::new("m.tfm", p.clone());
    assert_eq!(c.tokenizer_kind(), TokenizerKind::Tokens);
}

#[test]
fn bad_token_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("a.tok");
    write_token_file(&p, &[1, 2, 3, 4], 10).expect("write");
    let full = std::fs::read(&p).expect("read");
    std::fs::write(&p, &full[..full.len() - 1]).expect("truncate");
    let e = read_token_file(&p).expect_err("truncated");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: expected 4 tokens (8 bytes), found 7 bytes",
            p.display()
        )
    );
    std::fs::write(&p, b"hello world, this is text not tokens").expect("text");
    let e = read_token_file(&p).expect_err("magic");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: expected the token file magic `TFMTOKS`, found other bytes",
            p.display()
        )
    );
    std::fs::write(&p, b"short").expect("short");
    assert!(read_token_file(&p)
        .expect_err("short")
        .to_string()
        .contains("expected a token file header of 24 bytes, found 5 bytes"));
    // A token at or above the declared vocabulary.
    let mut bad = full.clone();
    bad[24] = 10;
    std::fs::write(&p, &bad).expect("bad token");
    let e = TextData::load(&cfg(p), TokenizerKind::Tokens).expect_err("token >= vocab");
    assert!(
        e.to_string().contains(
            "vocabulary mismatch: expected tokens below 10, found token 10 at position 0"
        ),
        "{e}"
    );
    assert!(write_token_file(&dir.path().join("b.tok"), &[10], 10).is_err());
}

#[test]
fn datasets_load_from_the_run_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("c.txt");
    std::fs::write(&p, "abcabcabcabc").expect("write");
    let mut c = tfm_train::RunConfig::new("m.tfm", p);
    let d = tfm_train::Dataset::load(&c).expect("text");
    assert_eq!(d.tokenizer().vocab_size(), 3);
    assert_eq!(d.fixed_context(), None);
    c.set_key("data", "{ task: addition, digits: 2, test_examples: 10 }")
        .expect("task");
    let d = tfm_train::Dataset::load(&c).expect("task");
    assert_eq!(d.fixed_context(), Some(9));
    assert!(matches!(d, tfm_train::Dataset::Addition(ref a) if a.test.len() == 10));
}
