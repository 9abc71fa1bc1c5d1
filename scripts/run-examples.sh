#!/usr/bin/env bash
# Trains the examples of every family on their real datasets (release build), each followed by
# `tfm eval` on its held-out split, and prints the wall time of each. Logs go to
# `runs/<example>.train.log` and `runs/<example>.eval.log`.
#
#   scripts/run-examples.sh                      # all of them, one after another
#   scripts/run-examples.sh vit clip             # some of them
#
# Examples: vit (ViT on MNIST), clip (CLIP-style zero-shot on MNIST), bert (masked-token
# pretraining on tiny Shakespeare, then fine-tuning on SMS spam), transformer and t5
# (English to French, BLEU), llama (Llama-style decoder on tiny Shakespeare, next to the GPT).
# The data is `$TFM_DATA_DIR`, by default `shared/data/` beside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

data="${TFM_DATA_DIR:-../shared/data}"
for f in mnist/train-images-idx3-ubyte.gz eng-fra.tsv sms_spam_collection.tsv tinyshakespeare.txt; do
    if [ ! -e "$data/$f" ]; then
        echo "error: $data/$f not found; set TFM_DATA_DIR to the folder holding the datasets" >&2
        exit 1
    fi
done
cargo build --release --quiet --bin tfm
bin=target/release/tfm
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/release/tfm"
mkdir -p runs

# run NAME -- ARGS...: one command, its output kept in runs/NAME.log and its wall time printed.
run() {
    local name=$1
    shift
    local start=$SECONDS
    echo "== $name: tfm $*"
    "$bin" "$@" --no-progress 2>&1 | tee "runs/$name.log" | grep -v '^step ' || true
    echo "== $name: $((SECONDS - start)) s"
    echo
}
evaluate() {
    local name=$1
    shift
    local start=$SECONDS
    echo "== $name: tfm $*"
    "$bin" "$@" 2>&1 | tee "runs/$name.log"
    echo "== $name: $((SECONDS - start)) s"
    echo
}

todo=("$@")
[ ${#todo[@]} -eq 0 ] && todo=(vit clip bert transformer t5 llama)
for ex in "${todo[@]}"; do
    case $ex in
        vit)
            run vit_mnist.train train examples/vit_mnist.tfm --config examples/vit_mnist.yaml --data "$data/mnist" --overwrite
            evaluate vit_mnist.eval eval examples/vit_mnist.tfm --checkpoint runs/vit_mnist/checkpoints/last
            ;;
        clip)
            run clip_mnist.train train examples/clip_mnist.tfm --config examples/clip_mnist.yaml --data "$data/mnist" --overwrite
            evaluate clip_mnist.eval eval examples/clip_mnist.tfm --checkpoint runs/clip_mnist/checkpoints/last
            ;;
        bert)
            run bert_mlm.train train examples/bert_sms.tfm --model bert_mini --config examples/bert_mlm.yaml --data "$data/tinyshakespeare.txt" --overwrite
            run bert_sms.train train examples/bert_sms.tfm --model bert_sms --config examples/bert_sms.yaml --data "$data/sms_spam_collection.tsv" --overwrite
            evaluate bert_sms.eval eval examples/bert_sms.tfm --model bert_sms --checkpoint runs/bert_sms/checkpoints/last
            evaluate bert_sms.predict predict examples/bert_sms.tfm --model bert_sms --checkpoint runs/bert_sms/checkpoints/last \
                "WINNER!! You have been selected to receive a 900 prize. Call 09061701461 to claim now"
            ;;
        transformer | t5)
            run "translate_$ex.train" train "examples/translate_$ex.tfm" --config "examples/translate_$ex.yaml" --data "$data/eng-fra.tsv" --overwrite
            evaluate "translate_$ex.eval" eval "examples/translate_$ex.tfm" --checkpoint "runs/translate_$ex/checkpoints/last" --beam 4
            evaluate "translate_$ex.generate" generate "examples/translate_$ex.tfm" --checkpoint "runs/translate_$ex/checkpoints/last" --prompt "I am very hungry."
            ;;
        llama)
            run llama_shakespeare.train train examples/llama_shakespeare.tfm --config examples/llama_shakespeare.yaml --data "$data/tinyshakespeare.txt" --overwrite
            evaluate llama_shakespeare.eval eval examples/llama_shakespeare.tfm --checkpoint runs/llama_shakespeare --data "$data/tinyshakespeare.txt" --batches 200
            ;;
        *)
            echo "error: unknown example \`$ex\`; expected vit, clip, bert, transformer, t5 or llama" >&2
            exit 2
            ;;
    esac
done
