//! The `rigmind` binary: parse arguments, run, exit with the command's code.

fn main() {
    match rigmind_cli::rigmind_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rigmind: {e:#}");
            std::process::exit(1);
        }
    }
}
