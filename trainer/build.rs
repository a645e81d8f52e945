//! Locate libtorch from `LIBTORCH` and bake its lib folder into the binaries' rpath, so the
//! trainer, its tests and benches run without `LD_LIBRARY_PATH`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(dir) = std::env::var_os("LIBTORCH") else {
        panic!(
            "LIBTORCH is not set: run `scripts/fetch-deps` (it fills .deps/libtorch, which .cargo/config.toml points LIBTORCH at)"
        );
    };
    let dir = PathBuf::from(dir);
    let abs = match dir.canonicalize() {
        Ok(abs) => abs,
        Err(e) => panic!(
            "LIBTORCH={} cannot be opened ({e}): run `scripts/fetch-deps` to fetch libtorch",
            dir.display()
        ),
    };
    if !abs.join("lib").is_dir() {
        panic!(
            "LIBTORCH={} has no lib/ folder: run `scripts/fetch-deps` to fetch libtorch",
            abs.display()
        );
    }
    println!(
        "cargo:rustc-link-arg=-Wl,-rpath,{}",
        abs.join("lib").display()
    );
    println!("cargo:rustc-env=DREAMER_LIBTORCH_DIR={}", abs.display());
}
