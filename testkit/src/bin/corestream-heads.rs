//! `corestream-heads MINILM_DIR OUT_DIR`: writes `OUT_DIR/reranker` (one score) and
//! `OUT_DIR/classifier` (labels negative, neutral, positive), Hugging Face model directories
//! made from the fetched MiniLM-L3 in `MINILM_DIR` (see `corestream_testkit::heads`).

use std::path::PathBuf;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [minilm, out] = args.as_slice() else {
        eprintln!("usage: corestream-heads MINILM_DIR OUT_DIR");
        std::process::exit(2);
    };
    for (name, head, config) in [
        (
            "reranker",
            corestream_testkit::Head::random(1, 7),
            corestream_testkit::heads::reranker_config(),
        ),
        (
            "classifier",
            corestream_testkit::Head::random(3, 11),
            corestream_testkit::heads::classifier_config(false),
        ),
    ] {
        if let Err(e) = head.write(minilm, &out.join(name), &config) {
            eprintln!("corestream-heads: {name}: {e}");
            std::process::exit(1);
        }
        println!("{}", out.join(name).display());
    }
}
