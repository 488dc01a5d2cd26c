//! `make demo`: see secprov_harness::demo.

fn main() {
    if let Err(e) = secprov_harness::demo::run() {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}
