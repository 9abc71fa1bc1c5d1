//! Readers for the real datasets (tab-separated pairs, labelled text, MNIST IDX, gzip or raw),
//! deterministic stratified and grouped splits, and generated captions for MNIST digits.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::TrainError;
use crate::rng::Rng;

// ---------------------------------------------------------------------------------------------
// Tab-separated text
// ---------------------------------------------------------------------------------------------

/// The lines of a UTF-8 text file as `(1-based line number, text)`, with a trailing `\r`
/// removed and the blank lines at the end of the file dropped. Invalid UTF-8 is an error at its line.
fn text_lines(path: &Path) -> Result<Vec<(usize, String)>, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, "read", e))?;
    let mut lines = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| {
            let col = e.valid_up_to();
            let found = raw.get(col).map_or(String::from("a cut-off character"), |b| {
                format!("byte 0x{b:02x} at byte {} of the line", col + 1)
            });
            TrainError::data_at(
                path,
                i + 1,
                format!("expected UTF-8 text, found {found}"),
                "re-encode the file as UTF-8 (for example `iconv -f LATIN1 -t UTF-8`)",
            )
        })?;
        lines.push((i + 1, text.to_string()));
    }
    while lines.last().is_some_and(|(_, t)| t.trim().is_empty()) {
        lines.pop();
    }
    Ok(lines)
}

/// Splits one line into its two tab-separated fields, or says what is wrong with it.
/// `names` are the field names used in messages, e.g. `("source", "target")`.
fn two_fields(path: &Path, line: usize, text: &str, names: (&str, &str)) -> Result<(String, String), TrainError> {
    let layout = format!("{}<TAB>{}", names.0, names.1);
    if text.trim().is_empty() {
        return Err(TrainError::data_at(
            path,
            line,
            format!("expected `{layout}`, found an empty line"),
            "remove the blank line",
        ));
    }
    let fields: Vec<&str> = text.split('\t').collect();
    if fields.len() != 2 {
        let hint = if fields.len() == 1 {
            format!("separate the {} from the {} with one tab character", names.0, names.1)
        } else {
            format!(
                "each line must hold exactly one tab; remove the extra tabs or replace them with spaces inside the {}",
                names.1
            )
        };
        return Err(TrainError::data_at(
            path,
            line,
            format!(
                "expected 2 tab-separated fields (`{layout}`), found {} field{}",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            ),
            hint,
        ));
    }
    for (field, name) in [(fields[0], names.0), (fields[1], names.1)] {
        if field.trim().is_empty() {
            return Err(TrainError::data_at(
                path,
                line,
                format!("expected a non-empty {name}, found an empty field"),
                format!("write the {name} on this line or remove the line"),
            ));
        }
    }
    Ok((fields[0].to_string(), fields[1].to_string()))
}

/// Reads `source<TAB>target` pairs, one per line (e.g. `eng-fra.tsv`), no header.
pub fn read_tsv_pairs(path: &Path) -> Result<Vec<(String, String)>, TrainError> {
    let lines = text_lines(path)?;
    let mut out = Vec::with_capacity(lines.len());
    for (n, text) in &lines {
        out.push(two_fields(path, *n, text, ("source", "target"))?);
    }
    if out.is_empty() {
        return Err(TrainError::data_at(
            path,
            0,
            "expected `source<TAB>target` lines, found an empty file",
            "point the data path at a file with at least one pair",
        ));
    }
    Ok(out)
}

/// Reads `label<TAB>text` lines (e.g. `sms_spam_collection.tsv`, which has no header). A first
/// line whose label is literally `label` (any case) is taken as a header and skipped.
pub fn read_tsv_labeled(path: &Path) -> Result<Vec<(String, String)>, TrainError> {
    let lines = text_lines(path)?;
    let mut out = Vec::with_capacity(lines.len());
    for (i, (n, text)) in lines.iter().enumerate() {
        let pair = two_fields(path, *n, text, ("label", "text"))?;
        if i == 0 && pair.0.trim().eq_ignore_ascii_case("label") {
            continue;
        }
        out.push(pair);
    }
    if out.is_empty() {
        return Err(TrainError::data_at(
            path,
            0,
            "expected `label<TAB>text` lines, found an empty file",
            "point the data path at a file with at least one labelled line",
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// MNIST IDX
// ---------------------------------------------------------------------------------------------

/// Images from an IDX file: `n` images of `rows x cols` bytes, row-major, one after another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    /// The pixels of image `i` (`rows * cols` bytes), if it exists.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let size = self.rows * self.cols;
        self.pixels.get(i * size..(i + 1) * size)
    }
}

const IDX_IMAGES: u32 = 0x0000_0803;
const IDX_LABELS: u32 = 0x0000_0801;

/// The file's bytes, gunzipped when they start with the gzip magic `1f 8b`.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, "read", e))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| {
                TrainError::data_at(
                    path,
                    0,
                    format!(
                        "expected a complete gzip stream, found a truncated or corrupt one ({})",
                        e.to_string().to_lowercase()
                    ),
                    "download the file again or decompress it with `gunzip` to see the damage",
                )
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn magic_name(m: u32) -> &'static str {
    match m {
        IDX_IMAGES => "an IDX image file",
        IDX_LABELS => "an IDX label file",
        _ if m >> 8 == 0x08 => "an IDX file of another shape",
        _ => "not an IDX file",
    }
}

/// Checks the magic number and that the header is there; returns the data after the header.
fn idx_header(path: &Path, data: &[u8], magic: u32, dims: usize, what: &str) -> Result<Vec<usize>, TrainError> {
    let header = 4 + 4 * dims;
    if data.len() < 4 {
        return Err(TrainError::data_at(
            path,
            0,
            format!("expected an IDX {what} file of at least {header} bytes, found {} bytes", data.len()),
            "the file is truncated; download it again",
        ));
    }
    let found = be_u32(data, 0);
    if found != magic {
        let hint = match (magic, found) {
            (IDX_IMAGES, IDX_LABELS) => "this is a label file; read it with `read_idx_labels`".to_string(),
            (IDX_LABELS, IDX_IMAGES) => "this is an image file; read it with `read_idx_images`".to_string(),
            _ => format!("point the path at an MNIST {what} file (`*-{what}-idx{dims}-ubyte[.gz]`)"),
        };
        return Err(TrainError::data_at(
            path,
            0,
            format!(
                "expected IDX magic 0x{magic:08x} ({what}), found 0x{found:08x} ({})",
                magic_name(found)
            ),
            hint,
        ));
    }
    if data.len() < header {
        return Err(TrainError::data_at(
            path,
            0,
            format!("expected a {header}-byte IDX header, found {} bytes", data.len()),
            "the file is truncated; download it again",
        ));
    }
    Ok((0..dims).map(|d| be_u32(data, 4 + 4 * d) as usize).collect())
}

fn exact_length(path: &Path, data: &[u8], header: usize, counts: &[usize], what: String) -> Result<(), TrainError> {
    let body = counts.iter().try_fold(1usize, |a, &c| a.checked_mul(c));
    let expected = body.and_then(|b| b.checked_add(header));
    match expected {
        Some(e) if e == data.len() => Ok(()),
        Some(e) => Err(TrainError::data_at(
            path,
            0,
            format!(
                "expected {e} bytes ({header}-byte header + {what}), found {} bytes",
                data.len()
            ),
            if data.len() < e {
                "the file is truncated; download it again"
            } else {
                "the file has extra bytes after the data its header announces; download it again"
            },
        )),
        None => Err(TrainError::data_at(
            path,
            0,
            format!("expected a plausible IDX header, found sizes {counts:?} that overflow"),
            "the header is corrupt; download the file again",
        )),
    }
}

/// Reads an IDX image file (magic `0x00000803`: count, rows, cols, then `u8` pixels), gzipped or raw.
pub fn read_idx_images(path: &Path) -> Result<Images, TrainError> {
    let data = read_maybe_gzip(path)?;
    let dims = idx_header(path, &data, IDX_IMAGES, 3, "images")?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    let what = format!("{n} image{} of {rows}x{cols}", if n == 1 { "" } else { "s" });
    exact_length(path, &data, 16, &dims, what)?;
    let mut pixels = data;
    pixels.drain(..16);
    Ok(Images { n, rows, cols, pixels })
}

/// Reads an IDX label file (magic `0x00000801`: count, then one `u8` per item), gzipped or raw.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, TrainError> {
    let data = read_maybe_gzip(path)?;
    let dims = idx_header(path, &data, IDX_LABELS, 1, "labels")?;
    let what = format!("{} label{}", dims[0], if dims[0] == 1 { "" } else { "s" });
    exact_length(path, &data, 8, &dims, what)?;
    Ok(data[8..].to_vec())
}

/// `dir/name.gz` if it exists, else `dir/name`.
fn find_idx(dir: &Path, name: &str) -> Result<PathBuf, TrainError> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    Err(TrainError::data_at(
        dir,
        0,
        format!("expected `{name}.gz` or `{name}` in this directory, found neither"),
        "point the path at the MNIST directory holding the four IDX files",
    ))
}

/// Reads one MNIST split (`"train"`: `train-*-idx?-ubyte[.gz]`, `"test"`: `t10k-*`) from `dir`,
/// checking that images and labels agree in number and that every label is a digit.
pub fn read_mnist(dir: &Path, split: &str) -> Result<(Images, Vec<u8>), TrainError> {
    let prefix = match split {
        "train" => "train",
        "test" => "t10k",
        other => {
            return Err(TrainError::data_hint(
                format!("expected MNIST split `train` or `test`, found `{other}`"),
                "use `train` (60000 images) or `test` (10000 images)",
            ))
        }
    };
    let images_path = find_idx(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_idx(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.n != labels.len() {
        return Err(TrainError::data_at(
            &labels_path,
            0,
            format!(
                "expected {} labels (one per image in `{}`), found {}",
                images.n,
                images_path.display(),
                labels.len()
            ),
            "the image and label files come from different splits or versions; use a matching pair",
        ));
    }
    if let Some(i) = labels.iter().position(|&l| l > 9) {
        return Err(TrainError::data_at(
            &labels_path,
            0,
            format!("expected digit labels 0..=9, found {} at item {i}", labels[i]),
            "this is not an MNIST label file",
        ));
    }
    Ok((images, labels))
}

// ---------------------------------------------------------------------------------------------
// Splits
// ---------------------------------------------------------------------------------------------

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// `test_fraction` clamped to `[0, 1]` (NaN counts as 0).
fn fraction(f: f64) -> f64 {
    if f.is_nan() {
        0.0
    } else {
        f.clamp(0.0, 1.0)
    }
}

/// Splits item indices into `(train, test)` so each class sends `round(count * test_fraction)`
/// of its items, chosen at random with `seed`, to the test side. Both lists are ascending.
pub fn stratified_split(labels: &[usize], test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let f = fraction(test_fraction);
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut rng = Rng::new(seed);
    let mut train = Vec::with_capacity(labels.len());
    let mut test = Vec::new();
    for items in by_class.values_mut() {
        shuffle(items, &mut rng);
        let k = ((items.len() as f64) * f).round() as usize;
        test.extend_from_slice(&items[..k]);
        train.extend_from_slice(&items[k..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Splits item indices into `(train, test)` by key: `round(distinct_keys * test_fraction)` keys,
/// chosen at random with `seed`, go to the test side with every item carrying them (for eng-fra:
/// hold out English sentences together with all their translations). Both lists are ascending.
pub fn holdout_by_key(keys: &[&str], test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let f = fraction(test_fraction);
    let mut distinct: Vec<&str> = keys.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let mut rng = Rng::new(seed);
    shuffle(&mut distinct, &mut rng);
    let k = ((distinct.len() as f64) * f).round() as usize;
    let held: HashMap<&str, ()> = distinct[..k].iter().map(|&s| (s, ())).collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, key) in keys.iter().enumerate() {
        if held.contains_key(key) {
            test.push(i);
        } else {
            train.push(i);
        }
    }
    (train, test)
}

// ---------------------------------------------------------------------------------------------
// Captions for MNIST digits
// ---------------------------------------------------------------------------------------------

/// Number of distinct wordings [`digit_captions`] produces for one label.
pub const CAPTION_VARIANTS: usize = 10;

const DIGIT_WORDS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

/// The English word for a digit (`7` -> `seven`); other numbers are written in numerals.
pub fn digit_word(label: u8) -> String {
    match DIGIT_WORDS.get(label as usize) {
        Some(w) => w.to_string(),
        None => label.to_string(),
    }
}

/// `a` or `an` before a number read aloud (`an eight`, `an 8`, `an 11`, `an 18`, `a 1`).
fn article(label: u8) -> &'static str {
    match label {
        8 | 11 | 18 | 80..=89 => "an",
        _ => "a",
    }
}

/// One of [`CAPTION_VARIANTS`] English captions for an image of `label` (`variant` is taken
/// modulo that), mixing words and numerals: `a handwritten seven`, `the digit 7`, ...
pub fn digit_captions(label: u8, variant: usize) -> String {
    let w = digit_word(label);
    let a = article(label);
    match variant % CAPTION_VARIANTS {
        0 => format!("a handwritten {w}"),
        1 => format!("the digit {label}"),
        2 => format!("a photo of the number {w}"),
        3 => format!("an image of {a} {label}"),
        4 => format!("a scanned digit {w}"),
        5 => format!("the number {label} written by hand"),
        6 => format!("{a} {w} drawn in ink"),
        7 => format!("a picture of the handwritten digit {label}"),
        8 => format!("a black and white image of {a} {w}"),
        _ => format!("a small grayscale {label}"),
    }
}

/// The single caption used to classify digits zero-shot: `a photo of the digit seven`.
pub fn zero_shot_caption(label: u8) -> String {
    format!("a photo of the digit {}", digit_word(label))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        (dir, p)
    }

    fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IDX_IMAGES, n, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn pairs_strip_cr_and_allow_trailing_blank_lines() {
        let (_d, p) = temp_file("p.tsv", b"Go.\tVa !\r\nHi.\tSalut.\n\n");
        let pairs = read_tsv_pairs(&p).expect("pairs");
        assert_eq!(
            pairs,
            vec![("Go.".into(), "Va !".into()), ("Hi.".into(), "Salut.".into())]
        );
    }

    #[test]
    fn pair_errors_name_the_line() {
        let (_d, p) = temp_file("p.tsv", b"a\tb\nno tab here\n");
        let e = read_tsv_pairs(&p).expect_err("no tab");
        assert!(matches!(e, TrainError::DataAt { line: 2, .. }), "{e}");
        let (_d, p) = temp_file("p.tsv", b"a\tb\n\tb\n");
        let e = read_tsv_pairs(&p).expect_err("empty source");
        assert!(e.to_string().ends_with("2: expected a non-empty source, found an empty field"), "{e}");
        let (_d, p) = temp_file("p.tsv", b"a\tb\nx\xff\ty\n");
        let e = read_tsv_pairs(&p).expect_err("utf8");
        assert!(e.to_string().ends_with("2: expected UTF-8 text, found byte 0xff at byte 2 of the line"), "{e}");
    }

    #[test]
    fn labeled_skips_a_header() {
        let (_d, p) = temp_file("l.tsv", b"Label\tText\nham\thi\nspam\twin\n");
        let v = read_tsv_labeled(&p).expect("labeled");
        assert_eq!(v, vec![("ham".into(), "hi".into()), ("spam".into(), "win".into())]);
    }

    #[test]
    fn idx_images_raw_and_gzip() {
        let raw = idx_images(2, 2, 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        for bytes in [raw.clone(), gzip(&raw)] {
            let (_d, p) = temp_file("i", &bytes);
            let im = read_idx_images(&p).expect("images");
            assert_eq!((im.n, im.rows, im.cols), (2, 2, 3));
            assert_eq!(im.image(1), Some(&[7u8, 8, 9, 10, 11, 12][..]));
            assert_eq!(im.image(2), None);
        }
        let (_d, p) = temp_file("i", &raw[..raw.len() - 1]);
        let e = read_idx_images(&p).expect_err("short");
        assert!(
            e.to_string()
                .ends_with("expected 28 bytes (16-byte header + 2 images of 2x3), found 27 bytes"),
            "{e}"
        );
    }

    #[test]
    fn stratified_split_is_proportional_and_deterministic() {
        let labels: Vec<usize> = (0..100).map(|i| if i < 80 { 0 } else { 1 }).collect();
        let (train, test) = stratified_split(&labels, 0.25, 3);
        assert_eq!(test.iter().filter(|&&i| labels[i] == 0).count(), 20);
        assert_eq!(test.iter().filter(|&&i| labels[i] == 1).count(), 5);
        assert_eq!(train.len(), 75);
        assert_eq!(stratified_split(&labels, 0.25, 3), (train.clone(), test.clone()));
        assert_ne!(stratified_split(&labels, 0.25, 4).1, test);
    }

    #[test]
    fn holdout_keeps_keys_together() {
        let keys = ["a", "b", "a", "c", "b", "d"];
        let (train, test) = holdout_by_key(&keys, 0.5, 1);
        assert_eq!(train.len() + test.len(), 6);
        // 2 of the 4 distinct keys are held out.
        let mut held: Vec<&str> = test.iter().map(|&i| keys[i]).collect();
        held.dedup();
        held.sort_unstable();
        held.dedup();
        assert_eq!(held.len(), 2);
        for &i in &train {
            assert!(!held.contains(&keys[i]));
        }
    }

    #[test]
    fn captions_read_naturally() {
        assert_eq!(digit_captions(7, 0), "a handwritten seven");
        assert_eq!(digit_captions(7, 1), "the digit 7");
        assert_eq!(digit_captions(7, 2), "a photo of the number seven");
        assert_eq!(digit_captions(7, 3), "an image of a 7");
        assert_eq!(digit_captions(8, 3), "an image of an 8");
        assert_eq!(digit_captions(8, 0), "a handwritten eight");
        assert_eq!(digit_captions(8, 8), "a black and white image of an eight");
        assert_eq!(digit_captions(3, 6 + CAPTION_VARIANTS), "a three drawn in ink");
        assert_eq!(zero_shot_caption(0), "a photo of the digit zero");
    }
}
