//! The addition task: format, held-out split, batches and the exact-match evaluator.

use std::collections::HashSet;

use tfm_train::addition::{AdditionTask, IGNORE};
use tfm_train::data::{DataSource, Split};
use tfm_train::Rng;

#[test]
fn examples_are_fixed_length_with_reversed_answers() {
    let t = AdditionTask::new(4, 10, 1).expect("task");
    assert_eq!(t.example(123, 4567), "0123+4567=09640\n");
    assert_eq!(t.example(9999, 9999), "9999+9999=89991\n");
    assert_eq!(t.example(0, 0), "0000+0000=00000\n");
    assert_eq!(t.example_len(), 16);
    assert_eq!(t.prompt_len(), 10);
    assert_eq!(t.tokenizer.vocab_size(), 13);
}

#[test]
fn test_split_is_seeded_distinct_and_never_trained_on() {
    let a = AdditionTask::new(2, 200, 7).expect("task");
    let b = AdditionTask::new(2, 200, 7).expect("task");
    let c = AdditionTask::new(2, 200, 8).expect("task");
    assert_eq!(a.test, b.test);
    assert_ne!(a.test, c.test);
    let distinct: HashSet<_> = a.test.iter().collect();
    assert_eq!(distinct.len(), 200);
    assert!(a.test.iter().all(|&(x, y)| x < 100 && y < 100));
    let mut rng = Rng::new(3);
    for _ in 0..5000 {
        let (x, y) = a.draw_train(&mut rng);
        assert!(!a.is_test(x, y));
    }
    assert!(
        AdditionTask::new(1, 51, 0).is_err(),
        "at most half of the 100 one-digit problems"
    );
}

#[test]
fn batches_are_whole_examples_with_the_prompt_masked() {
    let t = AdditionTask::new(3, 50, 2).expect("task");
    let ctx = t.fixed_context().expect("fixed");
    assert_eq!(ctx, 12);
    let b = t
        .sample(Split::Train, 5, ctx, &mut Rng::new(9))
        .expect("batch");
    for r in 0..5 {
        let x: Vec<u32> = b.x[r * ctx..(r + 1) * ctx]
            .iter()
            .map(|&v| v as u32)
            .collect();
        let text = t.tokenizer.decode(&x);
        let (a, rest) = text.split_once('+').expect("plus");
        let (bb, ans) = rest.split_once('=').expect("equals");
        let want = t.answer(a.parse().expect("a"), bb.parse().expect("b"));
        assert_eq!(ans, want, "x holds the example without its newline");
        let y = &b.y[r * ctx..(r + 1) * ctx];
        assert!(
            y[..7].iter().all(|&v| v == IGNORE),
            "operand targets are ignored: {y:?}"
        );
        let y_text = t
            .tokenizer
            .decode(&y[7..].iter().map(|&v| v as u32).collect::<Vec<_>>());
        assert_eq!(y_text, format!("{want}\n"));
    }
    let e = t.check_context(20, false).expect_err("wrong context");
    assert_eq!(
        e.to_string(),
        "expected a context of 12 for 3-digit addition, found 20"
    );
}

#[test]
fn exact_match_with_a_perfect_and_a_wrong_generator() {
    let t = AdditionTask::new(3, 40, 11).expect("task");
    let tok = t.tokenizer.clone();
    // An oracle that parses the prompt and adds, independently of the task's own answer().
    let oracle = |prompts: &[Vec<u32>]| -> Result<Vec<Vec<u32>>, String> {
        Ok(prompts
            .iter()
            .map(|p| {
                let s = tok.decode(p);
                let (a, b) = s.trim_end_matches('=').split_once('+').expect("prompt");
                let sum: u64 = a.parse::<u64>().expect("a") + b.parse::<u64>().expect("b");
                let digits: String = format!("{sum:04}").chars().rev().collect();
                tok.encode(&format!("{digits}\n")).expect("encode")
            })
            .collect())
    };
    let r = t.evaluate(7, None, oracle).expect("eval");
    assert_eq!((r.correct, r.total), (40, 40));
    assert_eq!(r.accuracy(), 1.0);
    let zeros = |p: &[Vec<u32>]| -> Result<Vec<Vec<u32>>, String> {
        Ok(vec![tok.encode("0000\n").expect("enc"); p.len()])
    };
    let r = t.evaluate(8, Some(10), zeros).expect("eval");
    assert_eq!(r.total, 10);
    assert!(r.correct <= 1);
    let short = |p: &[Vec<u32>]| -> Result<Vec<Vec<u32>>, String> { Ok(vec![vec![]; p.len()]) };
    assert_eq!(t.evaluate(8, None, short).expect("eval").correct, 0);
}
