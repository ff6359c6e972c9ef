//! The `brain` binary: parse arguments, run, exit with the command's code.

fn main() {
    match rigmind_cli::brain_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("brain: {e:#}");
            std::process::exit(1);
        }
    }
}
