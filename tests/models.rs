//! Two models on cards of two sizes, with the real brain and workers on fake GPUs
//! (each with a fake Ollama that knows both models): the 14B, declared at
//! 10,500 MB in `[[model]]`, is only ever loaded on the 24 GB card, never on the
//! 6 GB one, and every task of both models runs on a card holding its model.

mod common;

use common::gpu::{fake_rig, rig_toml, start_servers_with};
use rigmind_ollama_fake::RequestKind;

const SMALL: &str = "qwen2.5:7b";
const BIG: &str = "qwen2.5:14b";

/// The plan: 7B and 14B tasks interleaved (each `(name, model, depends_on, items)`).
fn plan_text() -> String {
    let tasks = [
        ("summarize", SMALL, "", "a, b, c"),
        ("judge", BIG, "summarize", "a, b, c"),
        ("review", BIG, "", "x, y"),
        ("recap", SMALL, "judge", "a, b, c"),
    ];
    let mut t = String::from("# Plan: two-models\n");
    for (name, model, deps, items) in tasks {
        t.push_str(&format!(
            "\n## Task: {name}\n- task_class: llm\n- model: {model}\n- for_each: [{items}]\n- estimate: 1s\n- prompt: {name} {{item}}.\n"
        ));
        if !deps.is_empty() {
            t.push_str(&format!("- depends_on: {deps}\n"));
        }
    }
    t
}

#[test]
fn two_models_run_on_cards_of_two_sizes_and_the_big_one_only_on_the_big_card() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut rig, fake_dir) = fake_rig(2);
    let servers = start_servers_with(&rt, &fake_dir, 2, |o| {
        o.models = vec![SMALL.to_string(), BIG.to_string()];
    });
    // gpu0 has 6 GB, gpu1 24 GB; the 14B needs 10.5 GB.
    let toml = rig_toml(
        &servers,
        "[[model]]\nname = \"qwen2.5:14b\"\nvram_mb = 10500\n",
    );
    let at = toml.rfind("vram_mb = 6144").expect("gpu1's size");
    let toml = format!("{}vram_mb = 24576{}", &toml[..at], &toml[at + 14..]);
    rig.write("root/rig.toml", &toml);
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    rig.start_worker("gpu1", &["--gpu", "1"]);
    let plan = rig.write("two-models.md", &plan_text());
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0, "{}", rig.decisions().join("\n"));

    // Every task ran with its own model.
    let done = rig.tasks_in("complete");
    let llm: Vec<_> = done.iter().filter(|t| t["task_class"] == "llm").collect();
    assert_eq!(llm.len(), 11, "{done:?}");
    for t in &llm {
        let want = match t["plan_task_id"].as_str() {
            Some("judge" | "review") => BIG,
            _ => SMALL,
        };
        assert_eq!(t["model"], want, "{t}");
    }
    // The 14B was loaded, and only on the big card, with the reason saying it fits.
    let loads = rig.decisions_with(&["decision=load_llm", "model=qwen2.5:14b"]);
    assert!(!loads.is_empty(), "{}", rig.decisions().join("\n"));
    for l in &loads {
        assert!(l.contains("worker=gpu1"), "{l}");
        assert!(
            l.contains("fits=yes vram_mb=10500 card_vram_mb=24576"),
            "{l}"
        );
    }
    let big_loads_on = |i: usize| {
        servers[i]
            .requests()
            .iter()
            .filter(|r| r.kind == RequestKind::Load && r.model.as_deref() == Some(BIG))
            .count()
    };
    assert_eq!(big_loads_on(0), 0, "the 14B was loaded on the 6 GB card");
    assert!(big_loads_on(1) >= 1);
    // The small card served the 7B.
    assert!(servers[0]
        .requests()
        .iter()
        .any(|r| r.kind == RequestKind::Generate && r.model.as_deref() == Some(SMALL)));
    drop(servers);
}
