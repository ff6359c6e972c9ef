//! Fake GPUs (`RIGMIND_FAKE_GPUS`) with an LLM server each that speaks Ollama's
//! protocol over real HTTP (the repo's own fake, in the test's process): the rig
//! tests/gpu.rs and tests/replay.rs run on.

use std::path::Path;
use std::time::Duration;

use rigmind_ollama_fake::{FakeHandle, FakeOptions};

use super::Rig;

/// The model every fake server knows and rig.toml names.
pub const MODEL: &str = "qwen2.5:7b";

/// One fake Ollama per fake GPU; each marks its card's memory while it holds
/// the model, as a real server's model holds VRAM.
pub fn start_servers(rt: &tokio::runtime::Runtime, fake_dir: &Path, gpus: u32) -> Vec<FakeHandle> {
    start_servers_with(rt, fake_dir, gpus, |_| {})
}

/// [`start_servers`], each server's options changed by `tweak`.
pub fn start_servers_with(
    rt: &tokio::runtime::Runtime,
    fake_dir: &Path,
    gpus: u32,
    tweak: impl Fn(&mut FakeOptions),
) -> Vec<FakeHandle> {
    (0..gpus)
        .map(|i| {
            std::fs::create_dir_all(fake_dir.join(i.to_string())).unwrap();
            let mut opts = FakeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                models: vec![MODEL.to_string()],
                load_latency: Duration::from_millis(300),
                unload_latency: Duration::from_millis(50),
                model_mb: 4500,
                fake_vram_file: Some(fake_dir.join(i.to_string()).join("ollama.mb")),
                ..FakeOptions::default()
            };
            tweak(&mut opts);
            rt.block_on(rigmind_ollama_fake::start(opts))
                .expect("fake ollama")
        })
        .collect()
}

/// A rig.toml for these servers, one `[[gpu]]` each (adaptive policy, a
/// `whisper_large` group of 1), with `extra` before the `[[gpu]]` entries.
pub fn rig_toml(servers: &[FakeHandle], extra: &str) -> String {
    let mut s = format!(
        "[llm]\nmodel = \"{MODEL}\"\nload_seconds = 0.3\nunload_seconds = 0.05\n\n\
         [resource_manager]\npolicy = \"adaptive\"\nidle_unload = \"2s\"\n\n\
         [safety]\nmin_free_ram_mb = 0\nmax_swap_percent = 100\nmax_gpu_temp_c = 83\n\n\
         [groups]\nwhisper_large = 1\n\n{extra}\n"
    );
    for (i, srv) in servers.iter().enumerate() {
        s.push_str(&format!(
            "[[gpu]]\nindex = {i}\nworker = \"gpu{i}\"\nollama = \"{}\"\nvram_mb = 6144\n\n",
            srv.url()
        ));
    }
    s
}

/// A rig whose processes see `gpus` fake cards of 6144 MB, and the directory
/// that fakes their memory.
pub fn fake_rig(gpus: u32) -> (Rig, std::path::PathBuf) {
    let mut rig = Rig::new();
    let fake_dir = rig.dir.path().join("fakegpu");
    rig.env = vec![
        ("RIGMIND_FAKE_GPUS".into(), format!("{gpus}x6144")),
        (
            "RIGMIND_FAKE_GPU_DIR".into(),
            fake_dir.display().to_string(),
        ),
    ];
    (rig, fake_dir)
}
