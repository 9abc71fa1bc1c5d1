//! Task batches checked by hand on small fixture files: the tensors each task feeds a model's
//! inputs (by name), the targets, padding, masking statistics, held-out splits, and the errors
//! when the data does not fit the spec.

use std::path::PathBuf;

use tfm_diag::SourceMap;
use tfm_elab::{check_source, CheckOptions};
use tfm_runtime::HostTensor;
use tfm_train::config::{RunConfig, TaskKind, TokenizerKind};
use tfm_train::data::{DataSource, Split};
use tfm_train::rng::Rng;
use tfm_train::tasks::{TaskBody, TaskData};
use tfm_train::vocab;
use tfm_train::TrainError;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tasks").join(name)
}

fn model(text: &str) -> tfm_ir::Model {
    let mut sources = SourceMap::new();
    let checked = check_source("t.tfm", text, &CheckOptions::default(), &mut sources);
    assert!(checked.diagnostics.iter().all(|d| !d.is_error()), "{:?}", checked.diagnostics);
    checked.models.into_iter().next().expect("a model").model
}

fn config(task: TaskKind, path: PathBuf, tokenizer: TokenizerKind) -> RunConfig {
    let mut c = RunConfig::new("t.tfm", path);
    c.data.task = Some(task);
    c.data.tokenizer = Some(tokenizer);
    c
}

fn i64s(t: &HostTensor) -> (&[usize], &[i64]) {
    match t {
        HostTensor::I64 { shape, data } => (shape, data),
        other => panic!("expected i64, found {other:?}"),
    }
}

const CLASSIFIER: &str = "
model c {
    input tokens: i64[B, T]
    input labels: i64[B]
    layer tok = embedding(300, 4)
    layer head = linear(4, 2)
    output logits = head(first(tok(tokens)))
    objective classify(logits, labels)
}
";

#[test]
fn classify_batches_start_with_bos_pad_to_the_longest_and_carry_labels() {
    let mut t = TaskData::load(&config(TaskKind::Classify, fixture("labels.tsv"), TokenizerKind::Byte)).expect("loads");
    // Classes are the sorted distinct labels.
    assert_eq!(t.classes, vec!["ham".to_string(), "spam".to_string()]);
    t.bind(&model(CLASSIFIER)).expect("binds");
    let TaskBody::Classify { train, test } = &t.body else { panic!("classify body") };
    // 10 lines, 7 ham and 3 spam; 20% stratified: round(7 * 0.2) = 1 ham, round(3 * 0.2) = 1 spam.
    assert_eq!((train.len(), test.len()), (8, 2));
    assert_eq!(test.iter().filter(|x| x.label == 1).count(), 1);
    // Every example is a line of the file in the byte vocabulary (byte b is id 5 + b).
    let content = std::fs::read_to_string(fixture("labels.tsv")).expect("read");
    let lines: Vec<(usize, &str)> = content
        .lines()
        .map(|l| l.split_once('\t').expect("tab"))
        .map(|(a, b)| (usize::from(a == "spam"), b))
        .collect();
    let text_of = |ids: &[u32]| -> String { ids.iter().map(|&i| (i - 5) as u8 as char).collect() };
    for x in train.iter().chain(test) {
        let t = text_of(&x.ids);
        assert!(lines.iter().any(|&(l, m)| m == t && l == x.label), "{t}");
    }
    let i_short = (0..train.len()).min_by_key(|&i| train[i].ids.len()).expect("examples");
    let i_long = (0..train.len()).max_by_key(|&i| train[i].ids.len()).expect("examples");
    let (short, long) = (text_of(&train[i_short].ids), text_of(&train[i_long].ids));
    let drawn = t.batch_of(Split::Train, &[i_short, i_long], 128, &mut Rng::new(1)).expect("batch");
    let (shape, tok) = i64s(&drawn.batch.inputs[0]);
    // [BOS] + the longest message; the short row is padded with [PAD] = 0.
    let w = long.len() + 1;
    assert_eq!(shape, &[2, w]);
    assert_eq!(tok[0], vocab::BOS as i64);
    assert_eq!(tok[w], vocab::BOS as i64);
    assert!(tok[1 + short.len()..w].iter().all(|&x| x == 0));
    let expect: Vec<i64> = long.bytes().map(|b| 5 + b as i64).collect();
    assert_eq!(&tok[w + 1..2 * w], expect.as_slice());
    let (lshape, labels) = i64s(&drawn.batch.inputs[1]);
    assert_eq!(lshape, &[2]);
    assert_eq!(labels, &[train[i_short].label as i64, train[i_long].label as i64]);
    assert_eq!(drawn.units, 2);
    // A context of 5 cuts the long message to [BOS] + 4 bytes.
    let cut = t.batch_of(Split::Train, &[i_long], 5, &mut Rng::new(1)).expect("batch");
    let (shape, tok) = i64s(&cut.batch.inputs[0]);
    assert_eq!(shape, &[1, 5]);
    assert_eq!(&tok[1..], &expect[..4]);
}

#[test]
fn a_classifier_with_too_few_outputs_is_refused_at_the_logits_line() {
    let mut t = TaskData::load(&config(TaskKind::Classify, fixture("labels.tsv"), TokenizerKind::Byte)).expect("loads");
    let one = CLASSIFIER.replace("linear(4, 2)", "linear(4, 1)");
    let e = t.bind(&model(&one)).expect_err("2 classes, 1 output");
    let TrainError::SpecMismatch { message, span, .. } = &e else { panic!("{e:?}") };
    assert!(message.contains("at least 2 outputs, one per class of the data (ham, spam), found 1"), "{message}");
    // The span is the `logits` line of the spec.
    let line = &one[span.start as usize..span.end as usize];
    assert!(line.contains("head(first(tok(tokens)))"), "{line}");
}

#[test]
fn an_input_the_task_does_not_provide_names_the_spec_line() {
    let mut t = TaskData::load(&config(TaskKind::Classify, fixture("labels.tsv"), TokenizerKind::Byte)).expect("loads");
    let odd = CLASSIFIER.replace("input labels: i64[B]", "input weights: i64[B]").replace("logits, labels", "logits, weights");
    let e = t.bind(&model(&odd)).expect_err("no `weights` tensor");
    assert!(e.to_string().contains("no tensor for the model input `weights`"), "{e}");
    assert!(e.hint().unwrap_or_default().contains("`tokens`, `segments`, `labels`"), "{:?}", e.hint());
}

const SEQ2SEQ: &str = "
model s {
    input src: i64[B, S]
    input tgt: i64[B, T]
    layer tok = embedding(64, 4)
    output logits = tok(tgt) @ tok.weight^T
    objective seq2seq(logits, tgt)
}
";

#[test]
fn translate_batches_teacher_force_with_bos_and_score_eos() {
    let mut c = config(TaskKind::Translate, fixture("pairs.tsv"), TokenizerKind::Word);
    c.data.test_fraction = Some(0.2);
    let mut t = TaskData::load(&c).expect("loads");
    t.bind(&model(SEQ2SEQ)).expect("binds");
    let TaskBody::Translate { train, test, test_sentences } = &t.body else { panic!("translate body") };
    // 7 distinct English sentences; round(7 * 0.2) = 1 held out with all its translations.
    assert_eq!(test_sentences.len(), 1);
    assert_eq!(test.len(), test_sentences[0].references.len());
    assert_eq!(train.len() + test.len(), 8);
    // `Hi.` has two references; wherever it went, both went with it.
    let hi_test = test_sentences[0].source == "Hi.";
    assert_eq!(test.len(), if hi_test { 2 } else { 1 });
    let v = t.vocab().expect("a word vocabulary").clone();
    // Build a batch from one pair by hand: source words + EOS; decoder input BOS + target;
    // labels target + EOS, -100 on padding.
    let i = train.iter().position(|p| p.tgt.len() == 3).expect("a three-word target");
    let j = train.iter().position(|p| p.tgt.len() == 2).expect("a two-word target");
    let drawn = t.batch_of(Split::Train, &[i, j], 32, &mut Rng::new(3)).expect("batch");
    let (sshape, src) = i64s(&drawn.batch.inputs[0]);
    let (tshape, tgt) = i64s(&drawn.batch.inputs[1]);
    let (_, lab) = i64s(drawn.batch.targets.as_ref().expect("targets"));
    let (pi, pj) = (&train[i], &train[j]);
    let s = pi.src.len().max(pj.src.len()) + 1;
    assert_eq!(sshape, &[2, s]);
    assert_eq!(tshape, &[2, 4]);
    assert_eq!(src[pi.src.len()], vocab::EOS as i64);
    let e = vocab::EOS as i64;
    let b = vocab::BOS as i64;
    let w = |k: usize, p: &tfm_train::tasks::Pair| p.tgt[k] as i64;
    assert_eq!(&tgt[..4], &[b, w(0, pi), w(1, pi), w(2, pi)]);
    assert_eq!(&lab[..4], &[w(0, pi), w(1, pi), w(2, pi), e]);
    assert_eq!(&tgt[4..], &[b, w(0, pj), w(1, pj), vocab::PAD as i64]);
    assert_eq!(&lab[4..], &[w(0, pj), w(1, pj), e, -100]);
    // Scored tokens: 4 + 3.
    assert_eq!(drawn.units, 7);
    // The vocabulary splits punctuation and keeps the elided article: `à l'aide !`.
    assert_eq!(vocab::words("À l'aide !", true), vec!["à", "l'", "aide", "!"]);
    // `!` ends most targets: it is in the vocabulary built from the training split.
    assert!(v.id("!").is_some());
}

#[test]
fn masked_lm_masks_about_fifteen_percent_and_scores_only_masked_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corpus.txt");
    let text: String = (0..4000).map(|i| (b'a' + (i * 7 % 26) as u8) as char).collect();
    std::fs::write(&path, &text).expect("write");
    let mut c = config(TaskKind::MaskedLm, path, TokenizerKind::Byte);
    c.data.val_fraction = 0.1;
    let mut t = TaskData::load(&c).expect("loads");
    let m = model(
        "model m {
            input tokens: i64[B, T]
            layer tok = embedding(261, 4)
            output logits = tok(tokens) @ tok.weight^T
            objective masked_token(logits, tokens)
        }",
    );
    t.bind(&m).expect("binds");
    let mut rng = Rng::new(42);
    let (mut chosen, mut as_mask, mut total) = (0usize, 0usize, 0usize);
    for _ in 0..20 {
        let d = t.draw(Split::Train, 8, 64, &mut rng).expect("draw");
        let (_, tok) = i64s(&d.batch.inputs[0]);
        let (_, lab) = i64s(d.batch.targets.as_ref().expect("labels"));
        for (&x, &y) in tok.iter().zip(lab) {
            total += 1;
            if y >= 0 {
                chosen += 1;
                // Labels are the original bytes: lowercase letters.
                assert!((5 + b'a' as i64..=5 + b'z' as i64).contains(&y), "{y}");
                if x == vocab::MASK as i64 {
                    as_mask += 1;
                }
            } else {
                // Unchosen positions show the original byte.
                assert!((5 + b'a' as i64..=5 + b'z' as i64).contains(&x), "{x}");
            }
        }
    }
    // 10,240 positions: 15% chosen (1,536 expected; 4 standard deviations is about 145),
    // of which 80% become [MASK].
    assert_eq!(total, 20 * 8 * 64);
    assert!((1390..=1680).contains(&chosen), "{chosen}");
    let frac = as_mask as f64 / chosen as f64;
    assert!((0.75..=0.85).contains(&frac), "{frac}");
}
