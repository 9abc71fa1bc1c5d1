//! TensorBoard event files: the records are well framed (length, masked CRC-32C of the length,
//! data, masked CRC-32C of the data) and hold the scalar tags.

use tfm_train::logging::{EvalStats, MetricsFile, Observer, Progress, StepStats, TensorBoard};

/// CRC-32C (Castagnoli), bitwise.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TensorFlow's record checksum mask.
fn masked(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        assert!(i + 12 <= bytes.len(), "truncated record header at {i}");
        let len = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes")) as usize;
        let len_crc = u32::from_le_bytes(bytes[i + 8..i + 12].try_into().expect("4 bytes"));
        assert_eq!(
            len_crc,
            masked(&bytes[i..i + 8]),
            "length checksum of record at {i}"
        );
        let data = &bytes[i + 12..i + 12 + len];
        let data_crc = u32::from_le_bytes(
            bytes[i + 12 + len..i + 16 + len]
                .try_into()
                .expect("4 bytes"),
        );
        assert_eq!(data_crc, masked(data), "data checksum of record at {i}");
        out.push(data.to_vec());
        i += 16 + len;
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn crc32c_reference_value() {
    // The CRC-32C check value (RFC 3720): "123456789" -> 0xE3069283.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn event_file_has_framed_records_with_every_tag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logdir = dir.path().join("tb");
    {
        let mut tb = TensorBoard::new(&logdir).expect("writer");
        for step in 0..3 {
            tb.on_step(&StepStats {
                step,
                total_steps: 3,
                loss: 2.5 - step as f32,
                lr: 1e-3,
                grad_norm: 0.75,
                tokens_per_sec: 1234.0,
                log: true,
            });
        }
        tb.on_eval(&EvalStats {
            step: 3,
            val_loss: 1.5,
            train_loss: Some(0.5),
            best: true,
        });
        tb.on_finish(3);
    } // dropping the writer flushes and closes the file
    let files: Vec<_> = std::fs::read_dir(&logdir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().into_string().expect("utf-8");
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let bytes = std::fs::read(files[0].path()).expect("read");
    let recs = records(&bytes);
    assert_eq!(
        recs.len(),
        1 + 3 * 4 + 1,
        "file version, 4 scalars per step, 1 eval"
    );
    assert!(contains(&recs[0], b"brain.Event:2"));
    for tag in [
        "train/loss",
        "val/loss",
        "lr",
        "grad_norm",
        "tokens_per_sec",
    ] {
        assert!(
            recs.iter().any(|r| contains(r, tag.as_bytes())),
            "tag {tag} missing"
        );
    }
    // The val/loss value 1.5 as a little-endian f32 sits in its record.
    let val = recs
        .iter()
        .find(|r| contains(r, b"val/loss"))
        .expect("val record");
    assert!(contains(val, &1.5f32.to_le_bytes()));
}

#[test]
fn steps_off_the_logging_interval_are_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = MetricsFile::new(dir.path()).expect("metrics");
    let s = StepStats {
        step: 4,
        total_steps: 10,
        loss: 1.0,
        lr: 0.1,
        grad_norm: 1.0,
        tokens_per_sec: 1.0,
        log: false,
    };
    m.on_step(&s);
    m.on_step(&StepStats { log: true, ..s });
    m.on_eval(&EvalStats {
        step: 5,
        val_loss: 0.5,
        train_loss: None,
        best: false,
    });
    let text = std::fs::read_to_string(m.path()).expect("read");
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        r#"{"grad_norm":1.0,"loss":1.0,"lr":0.1,"step":5,"tokens_per_sec":1.0}"#
    );
    assert_eq!(lines[1], r#"{"best":false,"step":5,"val_loss":0.5}"#);
}

#[test]
fn hidden_progress_bar_tracks_the_message() {
    let mut p = Progress::hidden();
    p.on_start(0, 10);
    p.on_eval(&EvalStats {
        step: 0,
        val_loss: 3.0,
        train_loss: None,
        best: true,
    });
    p.on_step(&StepStats {
        step: 0,
        total_steps: 10,
        loss: 2.0,
        lr: 1e-3,
        grad_norm: 1.0,
        tokens_per_sec: 500.0,
        log: true,
    });
    assert_eq!(p.message(), "loss 2.0000 val 3.0000 lr 1.00e-3 500 tok/s");
    p.on_finish(1);
}
