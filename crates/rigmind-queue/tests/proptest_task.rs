//! The task-file reader on arbitrary input: it returns an error naming the file,
//! and never panics.

use std::path::Path;

use proptest::prelude::*;
use rigmind_queue::task::{TaskFile, TaskName};
use rigmind_queue::QueueError;
use rigmind_types::TaskClass;

fn valid_task_bytes() -> Vec<u8> {
    let mut t = TaskFile::new("ab12cd", "transcribe[ep1]", TaskClass::Script);
    t.command = Some("python whisper.py \"{item}\"".into());
    t.depends_on = vec!["init".into()];
    t.env.insert("A".into(), "1".into());
    t.to_bytes()
}

fn check(bytes: &[u8]) {
    let path = Path::new("tasks/queue/p05-00000001-ab12cd-x.json");
    match TaskFile::from_bytes(path, bytes) {
        Ok(t) => {
            // Whatever reads must write back and read again the same.
            let again = TaskFile::from_bytes(path, &t.to_bytes()).expect("round trip");
            assert_eq!(again, t);
        }
        Err(QueueError::Invalid { path: p, .. }) => assert_eq!(p, path),
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&bytes);
    }

    #[test]
    fn truncated_task_files_never_panic(cut in 0usize..2000) {
        let bytes = valid_task_bytes();
        check(&bytes[..cut.min(bytes.len())]);
    }

    #[test]
    fn corrupted_task_files_never_panic(
        flips in proptest::collection::vec((0usize..2000, any::<u8>()), 1..8)
    ) {
        let mut bytes = valid_task_bytes();
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        check(&bytes);
    }

    #[test]
    fn arbitrary_json_objects_never_panic(
        fields in proptest::collection::btree_map(
            prop_oneof![
                Just("task_id".to_string()), Just("batch_id".to_string()),
                Just("name".to_string()), Just("status".to_string()),
                Just("priority".to_string()), Just("task_class".to_string()),
                Just("retry_count".to_string()), Just("env".to_string()),
                "[a-z_]{1,12}",
            ],
            prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                ".{0,20}".prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
                Just(serde_json::json!(["a", 1])),
                Just(serde_json::json!({"k": "v"})),
                Just(serde_json::json!("queued")),
                Just(serde_json::json!("cpu")),
            ],
            0..10,
        )
    ) {
        let v = serde_json::Value::Object(fields.into_iter().collect());
        check(v.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_file_names_never_panic(name in ".{0,80}") {
        if let Some(tn) = TaskName::parse(&name) {
            // A name that parses is one this code could have written.
            prop_assert_eq!(TaskName::parse(&tn.to_file_name()), Some(tn));
        }
    }
}
