//! Long texts are tokenised in pieces ([`TextTokenizer::encode_within`]): the ids the length
//! policy keeps (truncated to the model's length, from either end) and its verdict (over the
//! length or not) are those of tokenising the whole text, for texts with and without
//! whitespace, CJK, punctuation runs, long whitespace runs and one long word.

use corestream_serve::model::source::LEGACY_ONNX;
use corestream_serve::model::tokenizer::{Keep, TextTokenizer};

use crate::support::minilm_dir;

fn texts() -> Vec<(&'static str, String)> {
    let words = [
        "the",
        "cat",
        "sat",
        "on",
        "a",
        "mat,",
        "quickly!",
        "Zürich",
        "naïve",
        "co-operate",
    ];
    let prose: String = (0..20_000)
        .map(|i| words[(i * 7 + i / 3) % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        ("prose", prose),
        ("short words", "ab ".repeat(30_000)),
        ("cjk without spaces", "漢字仮名交じり文".repeat(6_000)),
        ("punctuation runs", "a.b,c;".repeat(15_000)),
        (
            "whitespace first",
            format!("{}{}", " \n\t".repeat(30_000), "word ".repeat(2_000)),
        ),
        ("one long word", "x".repeat(100_000)),
        ("just over", "ab ".repeat(126)),
        ("just under", "ab ".repeat(120)),
    ]
}

#[test]
fn long_texts_keep_the_ids_and_verdict_of_whole_tokenisation() {
    let Some(dir) = minilm_dir() else { return };
    let tokenizer =
        TextTokenizer::from_file(&dir.join("tokenizer.json"), &dir.join(LEGACY_ONNX)).unwrap();
    for max in [tokenizer.max_input_length(), 512] {
        for (name, text) in texts() {
            let whole = tokenizer.encode(&text).unwrap();
            for keep in [Keep::Start, Keep::End] {
                let within = tokenizer.encode_within(&text, max, keep).unwrap();
                assert_eq!(
                    within.len() > max,
                    whole.len() > max,
                    "{name}, max {max}, {keep:?}: {} vs {} ids",
                    within.len(),
                    whole.len()
                );
                let (mut a, mut b) = (within.clone(), whole.clone());
                tokenizer.truncate(&mut a, max, keep);
                tokenizer.truncate(&mut b, max, keep);
                assert_eq!(a, b, "{name}, max {max}, {keep:?}");
                // Dense texts stop early; a text whose start (or end) holds no tokens is
                // tokenised whole, as it was.
                let dense = !matches!(name, "one long word" | "whitespace first");
                if dense && whole.len() > 4 * max {
                    assert!(
                        within.len() < whole.len() / 2,
                        "{name}: {} of {} ids tokenised: not in pieces",
                        within.len(),
                        whole.len()
                    );
                }
            }
        }
    }
}
