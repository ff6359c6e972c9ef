//! Files written by an older rigmind (tests/fixtures/old-files) read with the current
//! types and written back: the same bytes, or the documented migration
//! (`NAME.written.json` beside `NAME.json`).

use std::path::{Path, PathBuf};

use rigmind_queue::batch::BatchRecord;
use rigmind_queue::brain_record::BrainRecord;
use rigmind_queue::workers::WorkerState;
use rigmind_queue::TaskFile;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/old-files")
}

/// Every `*.json` in `dir` that is an old file, not an expected rewrite.
fn old_files(dir: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".json") && !name.ends_with(".written.json")
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {dir}");
    out
}

/// What `path` must be written back as: itself, or its `.written.json`.
fn expected(path: &Path) -> String {
    let written = path.with_extension("written.json");
    let want = if written.exists() {
        written
    } else {
        path.to_path_buf()
    };
    std::fs::read_to_string(want).unwrap()
}

fn check(path: &Path, written: Vec<u8>) {
    let got = String::from_utf8(written).unwrap();
    assert_eq!(
        got,
        expected(path),
        "{} is not written back as expected",
        path.display()
    );
}

fn read_as<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> T {
    let bytes = std::fs::read(path).unwrap();
    rigmind_queue::json::from_slice(path, what, &bytes).unwrap()
}

#[test]
fn old_task_files_read_and_write_back_the_same() {
    for dir in ["queue", "processing", "complete", "failed", "hand"] {
        for path in old_files(dir) {
            let t = TaskFile::read(&path).unwrap_or_else(|e| panic!("{e}"));
            check(&path, t.to_bytes());
        }
    }
}

#[test]
fn old_worker_states_read_and_write_back_the_same() {
    for path in old_files("workers") {
        let w: WorkerState = read_as(&path, "worker state");
        check(&path, w.to_bytes());
    }
}

#[test]
fn old_batch_records_read_and_write_back_the_same() {
    for path in old_files("batches") {
        let b: BatchRecord = read_as(&path, "batch record");
        check(&path, b.to_bytes());
    }
}

#[test]
fn the_old_brain_record_reads_and_writes_back_the_same() {
    let path = fixtures().join("brain.json");
    let r: BrainRecord = read_as(&path, "brain record");
    check(&path, r.to_bytes());
}
