//! `boxlite-shim`: the per-box supervisor. Started by the BoxLite runtime, never by hand; the
//! logic lives in `boxlite::shim` beside the client side it talks to.

fn main() {
    std::process::exit(boxlite::shim::main());
}
