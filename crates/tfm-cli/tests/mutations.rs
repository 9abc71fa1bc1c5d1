//! Mutation testing of the checker: every spec in `specs/`, `examples/` and the standard library,
//! with one token deleted, duplicated, swapped with its neighbour, or a number replaced by an
//! absurd one, must check without a panic, in bounded time, with every error pointing inside
//! its file. Models that still check are also snapshotted and summarised, as `tfm check` and
//! `tfm summary` would.

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tfm_diag::SourceMap;
use tfm_elab::{check_source, CheckOptions};
use tfm_summary::{snapshot, summarize, SummaryOptions};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A spec split into tokens: runs of word characters (`[A-Za-z0-9_.]`), runs of white space,
/// and single punctuation characters. Concatenating the tokens gives the text back.
struct Corpus {
    name: String,
    tokens: Vec<String>,
    /// Indices of the tokens that are not white space.
    solid: Vec<usize>,
    /// Indices of the tokens that are numbers.
    numbers: Vec<usize>,
}

fn tokenize(text: &str) -> Vec<String> {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Word,
        Space,
        Punct,
    }
    let class = |c: char| {
        if c.is_alphanumeric() || c == '_' || c == '.' {
            Class::Word
        } else if c.is_whitespace() {
            Class::Space
        } else {
            Class::Punct
        }
    };
    let mut out: Vec<String> = vec![];
    let mut last: Option<Class> = None;
    for c in text.chars() {
        let k = class(c);
        match out.last_mut() {
            Some(t) if last == Some(k) && k != Class::Punct => t.push(c),
            _ => out.push(c.to_string()),
        }
        last = Some(k);
    }
    out
}

fn corpus() -> &'static [Corpus] {
    static CORPUS: OnceLock<Vec<Corpus>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = workspace_root();
        let mut files: Vec<PathBuf> = vec![root.join("crates/tfm-std/std/nn.tfm")];
        for dir in ["specs", "examples"] {
            for e in std::fs::read_dir(root.join(dir)).expect("the folder exists") {
                let p = e.expect("a folder entry").path();
                if p.extension().is_some_and(|x| x == "tfm") {
                    files.push(p);
                }
            }
        }
        files.sort();
        files
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).expect("readable spec");
                let tokens = tokenize(&text);
                assert_eq!(tokens.concat(), text, "tokenising keeps the text");
                let solid: Vec<usize> = (0..tokens.len()).filter(|i| !tokens[*i].trim().is_empty()).collect();
                let numbers: Vec<usize> = (0..tokens.len()).filter(|i| tokens[*i].starts_with(|c: char| c.is_ascii_digit())).collect();
                let name = p.strip_prefix(&root).unwrap_or(p).to_string_lossy().replace('\\', "/");
                Corpus { name, tokens, solid, numbers }
            })
            .collect()
    })
}

const ABSURD: &[&str] = &[
    "0",
    "-1",
    "1_000_000_000_000_000_000",
    "99999999999999999999",
    "1e308",
    "1e-308",
    "4294967296",
    "9223372036854775807",
    "18446744073709551616",
    "1_000_000_000",
    "0.0",
    "-0.5",
    "3",
];

#[derive(Clone, Debug)]
enum Mutation {
    Delete(prop::sample::Index),
    Duplicate(prop::sample::Index),
    Swap(prop::sample::Index),
    Number(prop::sample::Index, &'static str),
}

/// The mutated text of one spec.
fn apply(c: &Corpus, m: &Mutation) -> String {
    let mut t = c.tokens.clone();
    match m {
        Mutation::Delete(i) => {
            t.remove(c.solid[i.index(c.solid.len())]);
        }
        Mutation::Duplicate(i) => {
            let k = c.solid[i.index(c.solid.len())];
            let tok = t[k].clone();
            t.insert(k, tok);
        }
        Mutation::Swap(i) => {
            // Swap a token with the next one that is not white space.
            let j = i.index(c.solid.len().saturating_sub(1).max(1));
            if let (Some(a), Some(b)) = (c.solid.get(j), c.solid.get(j + 1)) {
                t.swap(*a, *b);
            }
        }
        Mutation::Number(i, n) => {
            if !c.numbers.is_empty() {
                t[c.numbers[i.index(c.numbers.len())]] = n.to_string();
            }
        }
    }
    t.concat()
}

/// What went wrong with one text: problems with its diagnostics, or the panic message.
type Outcome = Result<Vec<String>, String>;

/// Parses and checks one text as `tfm check` would, and lists the error diagnostics whose
/// primary span is missing or outside its file.
fn check_text(name: &str, text: &str) -> Vec<String> {
    let mut sources = SourceMap::new();
    let checked = check_source(name, text, &CheckOptions::default(), &mut sources);
    let mut problems = vec![];
    for d in checked.diagnostics.iter().filter(|d| d.is_error()) {
        match d.primary_span() {
            None => problems.push(format!("{} `{}` has no source location", d.code, d.message)),
            Some(s) => match sources.get(s.file) {
                None => problems.push(format!("{} `{}` points into unknown file {:?}", d.code, d.message, s.file)),
                Some(f) => {
                    let len = f.text.len();
                    let ok = s.start <= s.end
                        && (s.end as usize) <= len
                        && f.text.is_char_boundary(s.start as usize)
                        && f.text.is_char_boundary(s.end as usize);
                    if !ok {
                        problems.push(format!("{} `{}` has span {}..{} outside `{}` ({len} bytes)", d.code, d.message, s.start, s.end, f.name));
                    }
                }
            },
        }
    }
    // What `tfm check` and `tfm summary` do with a model that checks.
    for m in &checked.models {
        let _ = snapshot(&m.model);
        let _ = summarize(&m.model, &SummaryOptions { batch: 2, seq: 64 });
    }
    problems
}

/// One worker thread checks the texts it is sent, so that a checker that hangs is noticed (the
/// caller stops waiting) and a panic is reported with the text that caused it.
struct Worker {
    jobs: mpsc::Sender<(String, String)>,
    results: mpsc::Receiver<Outcome>,
}

fn spawn_worker() -> Worker {
    let (jobs, job_rx) = mpsc::channel::<(String, String)>();
    let (result_tx, results) = mpsc::channel();
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            for (name, text) in job_rx {
                let r = std::panic::catch_unwind(|| check_text(&name, &text)).map_err(|p| {
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
                });
                if result_tx.send(r).is_err() {
                    break;
                }
            }
        })
        .expect("a worker thread starts");
    Worker { jobs, results }
}

thread_local! {
    /// Each test thread has its own worker, so the property tests run in parallel.
    static WORKER: Worker = spawn_worker();
}

/// Checks one text on the worker; panics (with the text) on a panic, a time-out, or an error
/// whose primary span is missing or outside its file.
fn check_mutant(name: &str, text: String) {
    let outcome = WORKER.with(|w| {
        w.jobs.send((name.to_string(), text.clone())).expect("the worker is alive");
        w.results.recv_timeout(Duration::from_secs(20))
    });
    match outcome {
        Ok(Ok(problems)) => assert!(problems.is_empty(), "{name}: {}\n--- mutated text ---\n{text}", problems.join("\n")),
        Ok(Err(panic)) => panic!("{name}: the checker panicked: {panic}\n--- mutated text ---\n{text}"),
        Err(_) => panic!("{name}: the checker did not return within 20 s\n--- mutated text ---\n{text}"),
    }
}

#[test]
fn tokenizer_round_trips_and_splits_punctuation() {
    let t = tokenize("layer x = f(a, 1e-5)  // c\n");
    assert_eq!(t, ["layer", " ", "x", " ", "=", " ", "f", "(", "a", ",", " ", "1e", "-", "5", ")", "  ", "/", "/", " ", "c", "\n"]);
    assert!(corpus().len() >= 11, "found only {} specs", corpus().len());
}

#[test]
fn unmutated_corpus_is_clean() {
    for c in corpus() {
        check_mutant(&c.name, c.tokens.concat());
    }
}

/// Absurd repeat counts cost nothing to check (the body is checked once) and are counted exactly.
#[test]
fn absurd_repeat_counts() {
    let gpt2 = std::fs::read_to_string(workspace_root().join("specs/gpt2.tfm")).expect("specs/gpt2.tfm");
    assert!(gpt2.contains("layers: int = 12\n"));
    for n in ABSURD {
        check_mutant("specs/gpt2.tfm", gpt2.replace("layers: int = 12\n", &format!("layers: int = {n}\n")));
    }
    // As `--set layers=...`, which skips the spec's `expect params`.
    let opts = CheckOptions { overrides: vec![("layers".into(), "1000000000000000000".into())], model: Some("gpt2".into()) };
    let mut sources = SourceMap::new();
    let checked = check_source("specs/gpt2.tfm", &gpt2, &opts, &mut sources);
    assert!(checked.diagnostics.iter().all(|d| !d.is_error()), "{:?}", checked.diagnostics);
    let m = checked.models.first().expect("gpt2 still checks");
    let total = summarize(&m.model, &SummaryOptions { batch: 1, seq: 16 }).totals.trainable;
    // Embeddings 38,597,376 + 786,432, final LayerNorm 1,536, and 10^18 layers of 7,087,872.
    assert_eq!(total, 38_597_376 + 786_432 + 1_536 + 1_000_000_000_000_000_000u128 * 7_087_872);
}

/// Mutates one spec (chosen by `file`) and checks it within the time limit.
fn mutate_and_check(file: prop::sample::Index, m: &Mutation) -> Result<(), TestCaseError> {
    let specs = corpus();
    let c = &specs[file.index(specs.len())];
    let text = apply(c, m);
    let started = Instant::now();
    check_mutant(&c.name, text);
    prop_assert!(started.elapsed() < Duration::from_secs(10), "{}: {:?} took {:?}", c.name, m, started.elapsed());
    Ok(())
}

// Four properties of 500 cases each (2,000 mutants), run in parallel by the test harness.
proptest! {
    #![proptest_config(ProptestConfig { cases: 500, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn deleting_a_token_never_crashes(file in any::<prop::sample::Index>(), i in any::<prop::sample::Index>()) {
        mutate_and_check(file, &Mutation::Delete(i))?;
    }

    #[test]
    fn duplicating_a_token_never_crashes(file in any::<prop::sample::Index>(), i in any::<prop::sample::Index>()) {
        mutate_and_check(file, &Mutation::Duplicate(i))?;
    }

    #[test]
    fn swapping_tokens_never_crashes(file in any::<prop::sample::Index>(), i in any::<prop::sample::Index>()) {
        mutate_and_check(file, &Mutation::Swap(i))?;
    }

    #[test]
    fn absurd_numbers_never_crash(file in any::<prop::sample::Index>(), i in any::<prop::sample::Index>(), n in prop::sample::select(ABSURD)) {
        mutate_and_check(file, &Mutation::Number(i, n))?;
    }
}
