//! `stackhive-stacker`: level-2 jobs for a worker. `serve` (the only command) answers requests
//! on stdin and stdout (`stackhive_spec::stacker`); a worker starts it, next to its own binary.

fn main() {
    // Dies with the worker that started it: an orphan would hold memory and cores.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("stackhive-stacker: cannot tie its life to the worker's: {e}");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cores = match args.as_slice() {
        ["serve"] => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        ["serve", "--cores", n] => n
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--cores expects a positive number of cores, found {n:?}")),
        _ => Err("expected `serve [--cores N]`".to_string()),
    };
    match cores {
        Ok(cores) => stackhive_stacker::serve::serve(cores),
        Err(why) => {
            eprintln!(
                "stackhive-stacker: {why}\nusage: stackhive-stacker serve [--cores N]   \
                 (requests on stdin, answers on stdout; a worker runs it with its slots as N)"
            );
            std::process::exit(2);
        }
    }
}
