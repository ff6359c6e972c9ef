//! The `fake-ollama` binary as a child process: port file, raw-HTTP NDJSON stream,
//! request log, fake-VRAM file, hold-vram child and a clean exit on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rigmind_testkit::{eventually, wait_exit};
use serde_json::{json, Value};

/// Kills the child if a test fails half-way.
struct Fake(Child);

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection; returns (status, headers, body)
/// with a chunked body decoded.
fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn read_log(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every request-log line is JSON"))
        .collect()
}

#[test]
fn binary_serves_ollama_protocol_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("run/port");
    let log = dir.path().join("requests.jsonl");
    let vram = dir.path().join("gpus/0/ollama.mb");
    let pid_file = dir.path().join("holder.pid");
    let child = Command::new(env!("CARGO_BIN_EXE_fake-ollama"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--load-ms",
            "50",
            "--unload-ms",
            "10",
        ])
        .args(["--models", "qwen2.5:7b,llama3.2:1b", "--model-mb", "321"])
        .arg("--port-file")
        .arg(&port_file)
        .arg("--request-log")
        .arg(&log)
        .arg("--fake-vram-file")
        .arg(&vram)
        .arg("--hold-vram-cmd")
        .arg(format!(
            "echo $$ > {}; echo ready; exec sleep 600",
            pid_file.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut fake = Fake(child);

    eventually(20, "the port file", || port_file.exists());
    let addr = std::fs::read_to_string(&port_file).unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let (status, _, body) = raw_request(&addr, "GET", "/api/version", None);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()));

    // An explicit load: the VRAM file appears and the holder runs.
    assert!(!vram.exists());
    let (status, _, body) = raw_request(
        &addr,
        "POST",
        "/api/generate",
        Some(&json!({"model": "qwen2.5:7b", "keep_alive": -1})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read_to_string(&vram).unwrap().trim(), "321");
    let holder: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signal 0 only checks for existence.
    assert_eq!(unsafe { libc::kill(holder, 0) }, 0);

    // A streamed generate: chunked NDJSON, one JSON object per line.
    let (status, head, body) = raw_request(
        &addr,
        "POST",
        "/api/generate",
        Some(&json!({"model": "qwen2.5:7b", "prompt": "Why is the sky blue?"})),
    );
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-type"), Some("application/x-ndjson"));
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"));
    assert!(body.ends_with('\n'));
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    assert!(lines.len() > 2);
    for l in &lines[..lines.len() - 1] {
        assert_eq!(l["done"], false);
        assert!(l["response"].is_string());
        assert!(l["created_at"].is_string());
    }
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(last[k].as_u64().is_some_and(|n| n > 0), "{k} in {last}");
    }

    // A non-streamed request is one JSON object, not chunked NDJSON.
    let (status, head, body) = raw_request(
        &addr,
        "POST",
        "/api/chat",
        Some(&json!({"model": "qwen2.5:7b", "stream": false,
                     "messages": [{"role": "user", "content": "hi"}]})),
    );
    assert_eq!(status, 200);
    assert!(header(&head, "content-type")
        .unwrap()
        .starts_with("application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["message"]["role"], "assistant");

    // ps, then an unload: the VRAM file and the holder go away.
    let (_, _, body) = raw_request(&addr, "GET", "/api/ps", None);
    let ps: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ps["models"][0]["name"], "qwen2.5:7b");
    assert_eq!(ps["models"][0]["size_vram"], 321u64 * 1024 * 1024);
    let (status, _, body) = raw_request(
        &addr,
        "POST",
        "/api/generate",
        Some(&json!({"model": "qwen2.5:7b", "keep_alive": 0})),
    );
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["done_reason"],
        "unload"
    );
    eventually(10, "the VRAM file to go", || !vram.exists());
    assert_ne!(
        unsafe { libc::kill(holder, 0) },
        0,
        "holder stopped on unload"
    );

    let (status, _, body) = raw_request(
        &addr,
        "POST",
        "/api/generate",
        Some(&json!({"model": "missing:1b", "prompt": "x"})),
    );
    assert_eq!(status, 404);
    assert!(body.contains("not found, try pulling it first"));

    // The request log: one JSON line per request, in order.
    let recs = read_log(&log);
    let kinds: Vec<&str> = recs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["version", "load", "generate", "chat", "ps", "unload", "generate"]
    );
    assert_eq!(recs[1]["model"], "qwen2.5:7b");
    assert_eq!(recs[1]["path"], "/api/generate");
    assert_eq!(recs[1]["method"], "POST");
    assert_eq!(recs[6]["status"], 404);
    for r in &recs {
        let t = r["t"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{t}");
    }

    // Load again, then SIGTERM: the holder is stopped and the exit is clean.
    raw_request(
        &addr,
        "POST",
        "/api/generate",
        Some(&json!({"model": "llama3.2:1b"})),
    );
    assert!(vram.exists());
    let holder: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: SIGTERM to the child this test started.
    unsafe { libc::kill(fake.0.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut fake.0, 20, "fake-ollama after SIGTERM");
    assert!(status.success(), "{status}");
    assert_ne!(
        unsafe { libc::kill(holder, 0) },
        0,
        "holder stopped on exit"
    );
    assert!(!vram.exists());
}
