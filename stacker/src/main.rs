//! `stackhive-stacker`: level-2 jobs for a worker. `serve` (the only command) answers requests
//! on stdin and stdout (`stackhive_spec::stacker`); a worker starts it, next to its own binary.

fn main() {
    // Dies with the worker that started it: an orphan would hold memory and cores.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("stackhive-stacker: cannot tie its life to the worker's: {e}");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") if args.len() == 1 => stackhive_stacker::serve::serve(),
        _ => {
            eprintln!("usage: stackhive-stacker serve   (requests on stdin, answers on stdout; a worker runs it)");
            std::process::exit(2);
        }
    }
}
