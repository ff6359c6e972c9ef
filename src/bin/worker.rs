//! The `worker` binary: parse arguments, run, exit with the command's code.

fn main() {
    match rigmind_cli::worker_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("worker: {e:#}");
            std::process::exit(1);
        }
    }
}
